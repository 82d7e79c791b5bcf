from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.audit.verification import verify_chain


class Command(BaseCommand):
    help = (
        "Verify the audit log's keyed hash chain and its checkpoints; exit 1 naming the first "
        "bad event. --against FILE also compares with a copy outside the database (the "
        "checkpoint file or an audit stream file) and names the first difference. A passing "
        "run records a new checkpoint."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--against",
            metavar="FILE",
            help="a JSON-lines export: AUDIT_CHECKPOINT_FILE or an audit stream file "
            "(default: AUDIT_CHECKPOINT_FILE when it exists)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        against = options["against"]
        if against is not None and not Path(against).is_file():
            raise CommandError(f"--against {against}: no such file.")
        result = verify_chain(source="verify_audit_chain", against=against)
        if result.problem is not None:
            raise CommandError(
                f"{result.message} The alert 'Audit chain broken' is raised; "
                "treat it as a security incident."
            )
        self.stdout.write(self.style.SUCCESS(result.message))
