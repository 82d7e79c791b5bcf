from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.access import service_clients
from portal.access.actors import Actor
from portal.access.models import ServiceClient
from portal.access.roles import SCOPES
from portal.approvals import commands as approvals


class Command(BaseCommand):
    help = (
        "Create, list, rotate or revoke service clients (the Fleet services' API "
        "principals). create and rotate print the new token on their last line, once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a client and its first token.")
        create.add_argument("name")
        create.add_argument(
            "--scopes", required=True, help=f"Comma-separated: {', '.join(SCOPES)}."
        )
        create.add_argument("--description", default="")
        create.add_argument("--expires-days", type=int, default=service_clients.DEFAULT_EXPIRY_DAYS)
        approvals.add_arguments(create)
        sub.add_parser("list", help="List clients and their tokens (never the values).")
        rotate = sub.add_parser(
            "rotate", help="Issue a new token; the old one keeps working for --grace-hours."
        )
        rotate.add_argument("name")
        rotate.add_argument("--grace-hours", type=int, default=service_clients.DEFAULT_GRACE_HOURS)
        rotate.add_argument("--expires-days", type=int, default=service_clients.DEFAULT_EXPIRY_DAYS)
        revoke = sub.add_parser("revoke", help="Revoke a client; its tokens stop at once.")
        revoke.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.command("api_client")
        action = options["action"]
        try:
            if action == "create":
                created = approvals.run_covered(
                    self,
                    options,
                    actor,
                    lambda who: service_clients.create_client(
                        who,
                        options["name"],
                        options["scopes"],
                        options["description"],
                        options["expires_days"],
                    ),
                )
                if created is None:
                    return  # an approval request was filed
                client, raw = created
                self.stdout.write(
                    f"Created service client {client.name} "
                    f"({', '.join(client.scopes)}). Its token, shown once:"
                )
                self.stdout.write(raw)
            elif action == "list":
                for client in ServiceClient.objects.prefetch_related("tokens"):
                    state = "active" if client.is_active else "revoked"
                    usable = [t for t in client.tokens.all() if t.is_usable]
                    tokens = (
                        ", ".join(
                            f"{t.prefix}… until {t.expires_at:%Y-%m-%d %H:%M}"
                            if t.expires_at
                            else f"{t.prefix}…"
                            for t in usable
                        )
                        or "no usable token"
                    )
                    self.stdout.write(
                        "\t".join([client.name, ",".join(client.scopes), state, tokens])
                    )
            elif action == "rotate":
                token, raw = service_clients.rotate_client(
                    actor, options["name"], options["grace_hours"], options["expires_days"]
                )
                self.stdout.write(
                    f"New token {token.prefix}… for {options['name']}; the old "
                    f"ones work for {options['grace_hours']} h more. Shown once:"
                )
                self.stdout.write(raw)
            else:
                service_clients.revoke_client(actor, options["name"])
                self.stdout.write(f"Revoked service client {options['name']}.")
        except service_clients.ServiceClientError as exc:
            raise CommandError(str(exc)) from None
