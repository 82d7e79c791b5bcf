"""`manage.py send_test_message`: queue a test e-mail or Teams message (audited).

    manage.py send_test_message --mail --from ops@contoso.com --to me@contoso.com
    manage.py send_test_message --chat 19:abc@thread.v2
    manage.py send_test_message --team <team-id> --channel 19:def@thread.tacv2
    ... [--text "Hello"] [--wait 60]

With --wait N the command runs nothing itself: it waits up to N seconds for a worker to send
the message and exits 1 when it failed or did not go out in time.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.microsoft.messaging.errors import MessagingError
from integrations.microsoft.messaging.service import send_test_message
from integrations.microsoft.models import OutboundMessage
from portal.access.actors import Actor


class Command(BaseCommand):
    help = "Queue a test e-mail or Teams message through the outbound job."

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--mail", action="store_true", help="Send an e-mail.")
        target.add_argument("--chat", metavar="CHAT_ID", help="Post to a Teams chat.")
        target.add_argument("--team", metavar="TEAM_ID", help="Post to a channel (--channel).")
        parser.add_argument("--channel", metavar="CHANNEL_ID", default="")
        parser.add_argument(
            "--from", dest="sender", default="", help="Sending mailbox (UPN or id), for --mail."
        )
        parser.add_argument("--to", default="", help="Recipient address, for --mail.")
        parser.add_argument("--text", default="", help="Message text (default: a timestamp).")
        parser.add_argument(
            "--wait", type=float, default=0.0, help="Wait up to N seconds for a worker to send it."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["mail"] and not (options["sender"] and options["to"]):
            raise CommandError("--mail needs --from and --to.")
        if options["team"] and not options["channel"]:
            raise CommandError("--team needs --channel.")
        channel = "mail" if options["mail"] else "teams"
        try:
            message = send_test_message(
                Actor.command("send_test_message"),
                channel=channel,
                sender=options["sender"],
                to=options["to"],
                chat_id=options["chat"] or "",
                team_id=options["team"] or "",
                channel_id=options["channel"],
                text=options["text"],
            )
        except MessagingError as exc:
            raise CommandError(exc.reason) from exc
        self.stdout.write(f"Queued outbound message #{message.pk} (job #{message.job_id}).")
        if options["wait"] <= 0:
            return
        deadline = time.monotonic() + options["wait"]
        while time.monotonic() < deadline:
            message.refresh_from_db()
            if message.status == OutboundMessage.Status.SENT:
                self.stdout.write(
                    self.style.SUCCESS(f"Sent (Graph id {message.graph_message_id or '-'}).")
                )
                return
            if message.status == OutboundMessage.Status.FAILED:
                raise CommandError(f"Failed: {message.last_error}", returncode=1)
            time.sleep(0.5)
        raise CommandError(
            f"Not sent within {options['wait']:g} s (status {message.status}; "
            f"last error: {message.last_error or '-'}). Is a worker running?",
            returncode=1,
        )
