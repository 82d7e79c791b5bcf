"""`manage.py generate_certificate`: a new RSA key and a self-signed certificate for the app
registration's certificate credential.

    manage.py generate_certificate --out /secure/fleet-portal.pem [--days 365]

The key and the certificate go into one PEM file (mode 0600) that the console or
`rotate_client_secret --certificate-file` takes; the public certificate is printed, to be
uploaded to the app registration (Certificates & secrets → Certificates) first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.microsoft import certificates


class Command(BaseCommand):
    help = "Make a private key and self-signed certificate; print the certificate to upload."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--out", required=True, metavar="PATH", help="Where to write key + certificate (PEM)."
        )
        parser.add_argument("--days", type=int, default=365, help="Validity in days (default 365).")
        parser.add_argument(
            "--common-name", default="fleet-graph-portal", help="The certificate's subject CN."
        )
        parser.add_argument("--force", action="store_true", help="Overwrite the file if it exists.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 1 <= options["days"] <= 3650:
            raise CommandError("--days must be between 1 and 3650.")
        out = Path(options["out"])
        if out.exists() and not options["force"]:
            raise CommandError(f"{out} exists: pass --force to replace it.")
        key_pem, cert_pem = certificates.generate(options["common_name"], options["days"])
        try:
            # Created 0600 from the start: the private key is never readable by others.
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(key_pem + cert_pem)
        except OSError as exc:
            raise CommandError(f"Cannot write {out}: {exc.strerror}.") from None
        thumbprint, subject, expires = certificates.describe(cert_pem)
        self.stderr.write(
            f"Wrote the private key and certificate to {out} (keep it secret).\n"
            f"Subject {subject}, thumbprint {thumbprint}, expires {expires:%Y-%m-%d}.\n"
            "Upload this certificate to the app registration (Certificates & secrets → "
            "Certificates), then add the file in the console or with "
            f"`manage.py rotate_client_secret --certificate-file {out}`:"
        )
        self.stdout.write(cert_pem, ending="")
