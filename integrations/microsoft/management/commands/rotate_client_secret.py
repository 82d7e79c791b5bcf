"""`manage.py rotate_client_secret`: add → verify → activate a new credential.

A client secret is read from stdin (`printf %s "$NEW" | manage.py rotate_client_secret`) or,
on a terminal, prompted for without echo. A certificate comes from a file
(`--certificate-file key-and-cert.pem` or a .pfx, with `--certificate-password-stdin` when
it has a password); `--workload-identity` switches to the federated token file. Secrets and
passwords are never printed, logged or put on the command line.
"""

from __future__ import annotations

import getpass
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from integrations.microsoft import credential_lifecycle
from integrations.microsoft.credential_lifecycle import CredentialError
from integrations.microsoft.models import Credential
from portal.access.actors import Actor
from portal.approvals import commands as approvals


class Command(BaseCommand):
    help = (
        "Rotate the Graph credential: a client secret (from stdin), a certificate "
        "(--certificate-file) or workload identity (--workload-identity)."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--display-name",
            default="",
            help="Label for the new secret (e.g. the Entra ID description).",
        )
        kind = parser.add_mutually_exclusive_group()
        kind.add_argument(
            "--certificate-file",
            metavar="PATH",
            help="A certificate with its private key: PEM (key + certificate) or PFX.",
        )
        kind.add_argument(
            "--workload-identity",
            action="store_true",
            help="Use the federated token in MICROSOFT_CLIENT_ASSERTION_FILE (nothing stored).",
        )
        parser.add_argument(
            "--certificate-password-stdin",
            action="store_true",
            help="Read the PFX or private key password from stdin.",
        )
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help="Days until the secret expires in Entra ID (for reminders).",
        )
        parser.add_argument(
            "--no-activate", action="store_true", help="Add and verify only; activate later."
        )
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--rollback",
            action="store_true",
            help="Make the credential in its grace period active again.",
        )
        group.add_argument(
            "--retire", type=int, metavar="ID", help="Retire a pending or grace credential."
        )
        group.add_argument(
            "--list", action="store_true", help="List stored credentials (never their values)."
        )
        group.add_argument(
            "--activate", type=int, metavar="ID", help="Activate a verified pending credential."
        )
        approvals.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.command("rotate_client_secret")
        try:
            if options["list"]:
                self._list()
            elif options["rollback"]:
                credential = approvals.run_covered(
                    self, options, actor, credential_lifecycle.rollback
                )
                if credential is None:
                    return  # an approval request was filed
                self.stdout.write(
                    self.style.SUCCESS(
                        f"Rolled back: #{credential.pk} “{credential.display_name}” "
                        f"(…{credential.fingerprint}) is active again; the previous one is "
                        "pending."
                    )
                )
            elif options["retire"] is not None:
                credential = approvals.run_covered(
                    self,
                    options,
                    actor,
                    lambda who: credential_lifecycle.retire(who, options["retire"]),
                )
                if credential is not None:
                    self.stdout.write(self.style.SUCCESS(f"Retired #{credential.pk}."))
            elif options["activate"] is not None:
                credential = approvals.run_covered(
                    self,
                    options,
                    actor,
                    lambda who: credential_lifecycle.activate(who, options["activate"]),
                )
                if credential is not None:
                    self.stdout.write(self.style.SUCCESS(f"Activated #{credential.pk}."))
            else:
                self._rotate(actor, options)
        except CredentialError as exc:
            raise CommandError(str(exc)) from None

    def _read_secret(self, stream: Any) -> str:
        if stream.isatty():
            value = getpass.getpass("New client secret (input hidden): ")
        else:
            value = stream.readline()
        return value.strip()

    def _add(self, actor: Actor, options: dict[str, Any]) -> Credential:
        stream = options.get("stdin") or sys.stdin
        if options["workload_identity"]:
            return credential_lifecycle.add_workload_identity(actor, options["display_name"])
        if options["certificate_file"]:
            try:
                data = Path(options["certificate_file"]).read_bytes()
            except OSError as exc:
                raise CommandError(
                    f"Cannot read the certificate file {options['certificate_file']}: "
                    f"{exc.strerror}."
                ) from None
            password = ""
            if options["certificate_password_stdin"]:
                password = stream.readline().rstrip("\r\n")
            return credential_lifecycle.add_certificate(
                actor, data, password, options["display_name"]
            )
        if options["certificate_password_stdin"]:
            raise CommandError("--certificate-password-stdin goes with --certificate-file.")
        value = self._read_secret(stream)
        if not value:
            raise CommandError(
                'No secret on stdin. Usage: printf %s "$SECRET" | '
                "manage.py rotate_client_secret --display-name NAME"
            )
        expires_at = None
        if options["expires_days"] is not None:
            if options["expires_days"] <= 0:
                raise CommandError("--expires-days must be positive.")
            expires_at = timezone.now() + timedelta(days=options["expires_days"])
        return credential_lifecycle.add_secret(actor, value, options["display_name"], expires_at)

    def _rotate(self, actor: Actor, options: dict[str, Any]) -> None:
        if options["approval"] is not None:
            raise CommandError(
                "--approval runs an approved --activate ID, --rollback or --retire ID; a new "
                "credential is added without approval."
            )
        credential = self._add(actor, options)
        what = (
            f"thumbprint {credential.thumbprint}, expires {credential.expires_at:%Y-%m-%d}"
            if credential.kind == Credential.Kind.CERTIFICATE and credential.expires_at
            else f"…{credential.fingerprint}"
        )
        self.stdout.write(
            f"1. Added {credential.get_kind_display().lower()} #{credential.pk} "
            f"“{credential.display_name}” ({what}) as pending."
        )
        outcome = credential_lifecycle.verify_secret(actor, credential.pk)
        if not outcome.ok:
            raise CommandError(
                f"2. Verification failed: {outcome.detail} The credential stays "
                f"pending (#{credential.pk}); fix it or retire it with "
                f"--retire {credential.pk}."
            )
        self.stdout.write(
            f"2. Verified: a token was issued (roles: {', '.join(outcome.roles) or 'none'})."
        )
        if options["no_activate"]:
            self.stdout.write(
                f"3. Not activated (--no-activate). Activate #{credential.pk} "
                "from the console when ready."
            )
            return
        activated = approvals.run_covered(
            self, options, actor, lambda who: credential_lifecycle.activate(who, credential.pk)
        )
        if activated is None:
            self.stdout.write(
                f"3. Not activated yet: once approved, run "
                f"rotate_client_secret --activate {credential.pk} --approval ID."
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"3. Activated #{credential.pk}. The previous credential stays usable for "
                "rollback during its grace period (--rollback)."
            )
        )

    def _list(self) -> None:
        for c in credential_lifecycle.inventory():
            extra = f" grace until {c.grace_until:%Y-%m-%d %H:%M}" if c.grace_until else ""
            error = f" last error: {c.last_error[:80]}" if c.last_error else ""
            what = f"thumbprint {c.thumbprint}" if c.thumbprint else f"…{c.fingerprint}"
            self.stdout.write(
                f"#{c.pk} {c.state:8} {c.kind:11} {what} {c.display_name}{extra}{error}"
            )
