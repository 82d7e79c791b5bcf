from __future__ import annotations

import getpass
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.access import users
from portal.access.actors import Actor

ATTEMPTS = 3


class Command(BaseCommand):
    help = "Set a portal account's password (checked against the password rules; audited)."
    requires_migrations_checks = True

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from standard input instead of asking twice.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.command("changepassword")
        username = options["username"]
        if options["password_stdin"]:
            password = sys.stdin.readline().rstrip("\n")
            if not password:
                raise CommandError("No password on standard input.")
            self._set(actor, username, password)
            return
        for attempt in range(1, ATTEMPTS + 1):
            password = getpass.getpass(f"New password for {username}: ")
            if password != getpass.getpass("Again: "):
                self.stderr.write("The passwords differ.")
                continue
            try:
                self._set(actor, username, password)
                return
            except CommandError as exc:
                if attempt == ATTEMPTS or "too weak" not in str(exc):
                    raise
                self.stderr.write(str(exc))
        raise CommandError(f"Password unchanged for {username} after {ATTEMPTS} attempts.")

    def _set(self, actor: Actor, username: str, password: str) -> None:
        try:
            users.set_password(actor, username, password)
        except users.UserError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Password changed for {username}; their sessions end.")
