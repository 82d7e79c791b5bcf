"""`manage.py cleanup_webhooks [--dry-run]`: the runbook's `npm run webhooks:cleanup`.

Deletes expired subscription rows, Graph subscriptions of this deployment that the database
does not know (orphans), and rows Graph no longer has. Audited as one action.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from integrations.microsoft import subscriptions
from integrations.microsoft.management.commands.setup_webhooks import report
from portal.access.actors import Actor


class Command(BaseCommand):
    help = "Delete expired and orphaned webhook subscriptions (both in Graph and here)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be deleted; delete nothing."
        )
        parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        summary = subscriptions.cleanup(
            Actor.command("cleanup_webhooks"), dry_run=options["dry_run"]
        )
        report(self, summary, as_json=options["json"])
