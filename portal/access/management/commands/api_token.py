from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.access import api_tokens
from portal.access.actors import Actor
from portal.access.models import BearerToken
from portal.approvals import commands as approvals


class Command(BaseCommand):
    help = "Create, list or revoke API tokens (create prints only the token, once)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a token; prints it on stdout, once.")
        create.add_argument("--user", required=True)
        create.add_argument("--name", default="")
        create.add_argument(
            "--scopes", default="", help="Comma-separated permissions; default: the user's role."
        )
        create.add_argument("--expires-days", type=int, default=api_tokens.DEFAULT_EXPIRY_DAYS)
        approvals.add_arguments(create)
        sub.add_parser("list", help="List tokens (never their values).")
        revoke = sub.add_parser("revoke", help="Revoke a token by id.")
        revoke.add_argument("token_id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.command("api_token")
        try:
            if options["action"] == "create":
                scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
                created = approvals.run_covered(
                    self,
                    options,
                    actor,
                    lambda who: api_tokens.create_token(
                        who,
                        options["user"],
                        options["name"] or f"cli token for {options['user']}",
                        scopes,
                        options["expires_days"],
                    ),
                )
                if created is not None:
                    self.stdout.write(created[1])
            elif options["action"] == "list":
                for token in BearerToken.objects.of_people().select_related("user"):
                    state = (
                        "revoked"
                        if token.revoked_at
                        else ("usable" if token.is_usable else "expired")
                    )
                    expires = f"{token.expires_at:%Y-%m-%d}" if token.expires_at else "never"
                    self.stdout.write(
                        "\t".join(
                            [
                                str(token.pk),
                                f"{token.prefix}…",
                                token.owner_name,
                                token.name,
                                ",".join(token.scopes) or "role",
                                state,
                                expires,
                            ]
                        )
                    )
            else:
                token = api_tokens.revoke_token(actor, options["token_id"])
                self.stdout.write(f"Revoked {token.prefix}….")
        except api_tokens.TokenError as exc:
            raise CommandError(str(exc)) from None
