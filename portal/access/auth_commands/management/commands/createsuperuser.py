from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

REFUSAL = (
    "This portal has no superusers: the flag would grant everything beside the role matrix, "
    "unaudited. Create an administrator with `python manage.py portal_user create NAME "
    "--role admin` (audited; it prints a one-time password and an authenticator set-up link)."
)


class Command(BaseCommand):
    help = "Refused: create administrators with `portal_user create NAME --role admin`."

    def add_arguments(self, parser: CommandParser) -> None:
        # Django's own options, accepted so that scripts get the pointer, not a usage error.
        parser.add_argument("--username")
        parser.add_argument("--email")
        parser.add_argument("--noinput", "--no-input", action="store_false", dest="interactive")
        parser.add_argument("--database")

    def handle(self, *args: Any, **options: Any) -> None:
        raise CommandError(REFUSAL)
