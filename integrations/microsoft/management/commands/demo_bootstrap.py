"""First-run demo set-up against the emulator: monitored users and their subscriptions."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations import graph
from integrations.graph.errors import GraphError
from integrations.microsoft.models import MonitoredUser
from integrations.microsoft.monitored_users import add_monitored_user
from integrations.microsoft.subscriptions import setup
from portal.access.actors import Actor


class Command(BaseCommand):
    help = (
        "Demo tenant only: monitor a few demo users and set up their webhooks "
        "(does nothing once users are monitored)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=5, help="How many users to monitor.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.USING_EMULATOR:
            raise CommandError("demo_bootstrap only runs against the local Graph emulator.")
        if MonitoredUser.objects.exists():
            self.stdout.write("Monitored users exist already; nothing to do.")
            return
        actor = Actor.command("demo_bootstrap")
        try:
            people = graph.get("/users", params={"$top": "50", "$select": "userPrincipalName"})
        except GraphError as exc:
            raise CommandError(f"Could not list the demo tenant's users: {exc}") from None
        upns = [
            u["userPrincipalName"]
            for u in people.get("value", [])
            if not u["userPrincipalName"].startswith("fleet.bot")
        ][: options["users"]]
        if settings.PROBE_MAILBOX and settings.PROBE_MAILBOX not in upns:
            upns.append(settings.PROBE_MAILBOX)  # the end-to-end probe's mailbox
        for upn in upns:
            add_monitored_user(actor, upn)
            self.stdout.write(f"Monitoring {upn}")
        summary = setup(actor)
        self.stdout.write(summary.lines()[-1])
        for line in summary.failed:
            self.stderr.write(f"Failed: {line}")
