from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from portal.audit.verification import verify_chain


class Command(BaseCommand):
    help = (
        "Verify the audit log's keyed hash chain against the last checkpoint; exit 1 "
        "naming the first bad event. A passing run records a new checkpoint."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = verify_chain(source="verify_audit_chain")
        if result.problem is not None:
            raise CommandError(
                f"{result.message} The alert 'Audit chain broken' is raised; "
                "treat it as a security incident."
            )
        self.stdout.write(self.style.SUCCESS(result.message))
