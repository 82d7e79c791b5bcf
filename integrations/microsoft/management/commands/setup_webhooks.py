"""`manage.py setup_webhooks [--dry-run]`: the runbook's `npm run setup:webhooks`.

Reconciles the monitored users' desired subscriptions with Graph and the database (creates,
renews, recreates; idempotent), prints a summary and exits 1 if anything failed. Audited as
one action (subscriptions.setup does it).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.template.defaultfilters import pluralize

from integrations.microsoft import subscriptions
from portal.access.actors import Actor


class Command(BaseCommand):
    help = "Create, renew and recreate the Graph webhook subscriptions of the monitored users."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Show what would change; change nothing in Graph or here.",
        )
        parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        summary = subscriptions.setup(Actor.command("setup_webhooks"), dry_run=options["dry_run"])
        report(self, summary, as_json=options["json"])


def report(command: BaseCommand, summary: subscriptions.Summary, *, as_json: bool) -> None:
    if as_json:
        command.stdout.write(
            json.dumps(
                {"dry_run": summary.dry_run, **summary.counts(), "failures": summary.failed},
                indent=2,
            )
        )
    else:
        for line in summary.lines():
            command.stdout.write(line)
    if summary.failed:
        raise CommandError(
            f"{len(summary.failed)} operation{pluralize(summary.failed)} failed", returncode=1
        )
