"""`manage.py connect_tenant`: point the portal at another tenant (demo → real, or any two).

    printf %s "$SECRET" | manage.py connect_tenant --tenant-id T --client-id C \
        --client-secret-stdin [--public-base-url https://portal.example.com] [--dry-run] [--yes]
    manage.py connect_tenant --tenant-id T --client-id C --certificate-file key-and-cert.pem \
        [--certificate-password-stdin] ...

A token is acquired with the new values first (nothing changes if that fails), then the
changes are listed and, after confirmation, applied as one audited action; the new settings
go into the .env (demo) or are printed (environment-configured deployments). Finally the
integration checklist runs against the new tenant. Secrets, keys and passwords are never
printed.
"""

from __future__ import annotations

import getpass
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.template.defaultfilters import pluralize
from django.utils import timezone

from integrations.microsoft import certificates, tenant
from integrations.microsoft.certificates import CertificateCredential, CertificateError
from integrations.microsoft.tenant import ConnectError
from integrations.microsoft.verify import run_checks
from portal.access.actors import Actor
from portal.approvals import commands as approvals


class Command(BaseCommand):
    help = "Connect the portal to another tenant: token first, preview, apply, verify."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant-id", required=True, help="Directory (tenant) id.")
        parser.add_argument("--client-id", required=True, help="Application (client) id.")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument(
            "--client-secret-stdin",
            action="store_true",
            help="Read the client secret (its value, not its id) from stdin.",
        )
        source.add_argument(
            "--client-secret-file", metavar="PATH", help="Read the client secret from this file."
        )
        source.add_argument(
            "--certificate-file",
            metavar="PATH",
            help="A certificate with its private key (PEM or PFX) uploaded to the app.",
        )
        parser.add_argument(
            "--certificate-password-stdin",
            action="store_true",
            help="Read the PFX or private key password from stdin.",
        )
        parser.add_argument(
            "--authority-host",
            default="",
            help=f"Identity platform (default {tenant.DEFAULT_AUTHORITY_HOST}).",
        )
        parser.add_argument(
            "--graph-url", default="", help=f"Graph base URL (default {tenant.DEFAULT_GRAPH_URL})."
        )
        parser.add_argument(
            "--ca-bundle", default="", help="CA bundle for both (default: the system's CA store)."
        )
        parser.add_argument(
            "--public-base-url",
            default="",
            help="Where Graph reaches this portal's webhooks (https).",
        )
        parser.add_argument(
            "--keep-monitored-users",
            action="store_true",
            help="Re-resolve monitored users by UPN in the new tenant (default: drop them).",
        )
        parser.add_argument(
            "--secret-expires-days",
            type=int,
            default=None,
            help="Days until the secret expires in Entra ID (shown by verify).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Acquire a token and show the changes; change nothing.",
        )
        approvals.add_arguments(parser)
        parser.add_argument(
            "--yes", action="store_true", help="Do not ask (synced items are kept)."
        )

    def _secret(self, options: dict[str, Any]) -> tenant.NewCredential:
        if options["certificate_file"]:
            return self._certificate(options)
        if options["certificate_password_stdin"]:
            raise CommandError("--certificate-password-stdin goes with --certificate-file.")
        if options["client_secret_file"]:
            try:
                return Path(options["client_secret_file"]).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise CommandError(f"Cannot read the secret file: {exc.strerror}.") from None
        stream = options.get("stdin") or sys.stdin
        if stream.isatty():
            return getpass.getpass("Client secret (input hidden): ").strip()
        return stream.readline().strip()

    def _certificate(self, options: dict[str, Any]) -> CertificateCredential:
        path = options["certificate_file"]
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CommandError(
                f"Cannot read the certificate file {path}: {exc.strerror}."
            ) from None
        password = ""
        if options["certificate_password_stdin"]:
            stream = options.get("stdin") or sys.stdin
            if stream.isatty():
                password = getpass.getpass("Certificate password (input hidden): ")
            else:
                password = stream.readline().rstrip("\r\n")
        try:
            return certificates.load(data, password)
        except CertificateError as exc:
            raise CommandError(f"{path}: {exc}") from None

    def _ask(self, question: str) -> bool:
        self.stdout.write(f"{question} [y/N] ", ending="")
        self.stdout.flush()
        answer = sys.stdin.readline() if sys.stdin.isatty() else ""
        return answer.strip().lower() in {"y", "yes"}

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.command("connect_tenant")
        secret = self._secret(options)
        expires_at = None
        if options["secret_expires_days"] is not None:
            if options["secret_expires_days"] <= 0:
                raise CommandError("--secret-expires-days must be positive.")
            expires_at = timezone.now() + timedelta(days=options["secret_expires_days"])
        interactive = not options["yes"] and not options["dry_run"]
        if interactive and not sys.stdin.isatty():
            raise CommandError("Not a terminal: pass --yes to apply (or --dry-run to preview).")
        try:
            target = tenant.clean_target(
                options["tenant_id"],
                options["client_id"],
                authority_host=options["authority_host"],
                graph_url=options["graph_url"],
                ca_bundle=options["ca_bundle"],
                public_base_url=options["public_base_url"],
            )
            plan = tenant.prepare(
                actor,
                target,
                secret,
                keep_monitored_users=options["keep_monitored_users"],
                secret_expires_at=expires_at,
            )
            if options["dry_run"]:
                self._preview(plan)
                self.stdout.write("Dry run: nothing was changed.")
                return
            if interactive and plan.synced_items:
                plan.drop_synced_items = self._ask(
                    f"Drop the {plan.synced_items} synced items of the old tenant?"
                )
            self._preview(plan)
            if interactive and not self._ask("Apply these changes?"):
                raise CommandError("Nothing was changed.", returncode=1)
            credential = secret

            def connect(who: Actor) -> tenant.ConnectResult:
                return tenant.apply(who, plan, credential)

            result = approvals.run_covered(self, options, actor, connect)
        except ConnectError as exc:
            raise CommandError(str(exc)) from None
        del secret
        if result is not None:  # None: an approval request was filed
            self._report(result)

    def _preview(self, plan: tenant.ConnectPlan) -> None:
        self.stdout.write("Changes:")
        for line in plan.lines():
            self.stdout.write(f"  - {line}")

    def _report(self, result: tenant.ConnectResult) -> None:
        self.stdout.write(
            self.style.SUCCESS(
                f"Connected to tenant {result.plan.target.tenant_id} (credential "
                f"#{result.credential.pk} …{result.credential.fingerprint} active)."
            )
        )
        if result.remote_failed:
            self.stdout.write(
                f"{len(result.remote_failed)} subscription{pluralize(result.remote_failed)} "
                "could not be deleted in the old tenant (they expire there by themselves):"
            )
            for line in result.remote_failed:
                self.stdout.write(f"  {line}")
        if result.settings_written:
            self.stdout.write(f"Wrote the tenant settings to {result.settings_written}.")
        if result.settings_to_set:
            self.stdout.write(
                "Set these environment variables where the portal's settings "
                "come from (e.g. the Kubernetes ConfigMap/Secret), then restart:"
            )
            for key, value in result.settings_to_set.items():
                self.stdout.write(f"  {key}={value}")
        self.stdout.write(
            "Restart the web server and the worker so they read the new "
            "settings; until then they refuse to ask for tokens."
        )
        self.stdout.write("Integration checklist against the new tenant:")
        results = run_checks()
        for check in results:
            mark = self.style.SUCCESS("✔") if check.ok else self.style.ERROR("✘")
            self.stdout.write(f"  {mark} {check.name}: {check.detail}")
        failed = [c.name for c in results if not c.ok]
        if failed:
            self.stdout.write(
                self.style.WARNING(
                    f"{len(failed)} check{pluralize(failed)} failed: {', '.join(failed)} — see "
                    "docs/real-tenant.md."
                )
            )
