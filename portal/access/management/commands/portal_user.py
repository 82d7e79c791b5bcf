from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.template.defaultfilters import pluralize

from portal.access import mfa, users
from portal.access.actors import Actor
from portal.access.roles import ROLES
from portal.approvals import commands as approvals


class Command(BaseCommand):
    help = "Create portal users, set their password or role, or deactivate them (each audited)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a user with one role.")
        create.add_argument("username")
        create.add_argument("--role", required=True, choices=ROLES)
        create.add_argument("--email", default="")
        create.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from standard input instead of generating one.",
        )
        approvals.add_arguments(create)
        set_role = sub.add_parser("set-role", help="Give a user another role.")
        set_role.add_argument("username")
        set_role.add_argument("role", choices=ROLES)
        set_password = sub.add_parser(
            "set-password",
            help="Give a user a new password: generated and shown once, or read from standard "
            "input with --password-stdin. Their sessions end.",
        )
        set_password.add_argument("username")
        set_password.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from standard input instead of generating one.",
        )
        approvals.add_arguments(set_role)
        deactivate = sub.add_parser("deactivate", help="Deactivate a user and end their sessions.")
        deactivate.add_argument("username")
        reset_mfa = sub.add_parser(
            "reset-mfa",
            help="Forget a user's authenticator (lost "
            "phone); they set up a new one at their next sign-in.",
        )
        reset_mfa.add_argument("username")
        enrol_link = sub.add_parser(
            "enrol-link",
            help="Print a one-time link (24 h) with which "
            "the user sets up an authenticator after signing in.",
        )
        enrol_link.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.command("portal_user")
        try:
            if options["action"] == "create":
                password = self._password_from_stdin(options)
                created = approvals.run_covered(
                    self,
                    options,
                    actor,
                    lambda who: users.create_user(
                        who, options["username"], options["role"], password, options["email"]
                    ),
                )
                if created is None:
                    return  # an approval request was filed
                user, password = created
                self.stdout.write(f"Created {user.get_username()} with role {options['role']}.")
                if not options["password_stdin"]:
                    self.stdout.write(f"Password (shown once): {password}")
                self.stdout.write(
                    f"Authenticator set-up link (once, 24 h): {mfa.enrol_link(actor, user)}"
                )
            elif options["action"] == "set-password":
                user, password = users.set_password(
                    actor, options["username"], self._password_from_stdin(options)
                )
                self.stdout.write(f"{options['username']} has a new password.")
                if not options["password_stdin"]:
                    self.stdout.write(f"Password (shown once): {password}")
            elif options["action"] == "set-role":
                changed = approvals.run_covered(
                    self,
                    options,
                    actor,
                    lambda who: users.set_role(who, options["username"], options["role"]),
                )
                if changed is None:
                    return  # an approval request was filed
                self.stdout.write(f"{options['username']} now has role {options['role']}.")
            elif options["action"] == "reset-mfa":
                user = users.get_user(options["username"])
                removed = mfa.reset(actor, user)
                self.stdout.write(
                    f"Removed {removed} authenticator{pluralize(removed)} of {options['username']}."
                )
                self.stdout.write(
                    f"Set-up link for the new one (once, 24 h): {mfa.enrol_link(actor, user)}"
                )
            elif options["action"] == "enrol-link":
                user = users.get_user(options["username"])
                self.stdout.write(
                    f"Authenticator set-up link for {options['username']} "
                    f"(once, 24 h): {mfa.enrol_link(actor, user)}"
                )
            else:
                users.deactivate(actor, options["username"])
                self.stdout.write(f"Deactivated {options['username']}; their sessions are ended.")
        except users.UserError as exc:
            raise CommandError(str(exc)) from None

    @staticmethod
    def _password_from_stdin(options: dict[str, Any]) -> str | None:
        if not options["password_stdin"]:
            return None
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise CommandError("No password on standard input.")
        return password
