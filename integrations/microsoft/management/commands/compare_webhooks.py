"""`manage.py compare_webhooks [--json]`: the runbook's `GET graph …/subscriptions`, beside
the database (the same service as the Subscriptions page's comparison and
GET /api/subscriptions/compare, with the same per-person limit).

Exit code 1 when Graph could not be listed or this deployment's side is out of step
(missing in Graph, an orphan, a stale row, a differing expiry).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.microsoft import diagnosis
from portal.access.actors import Actor


class Command(BaseCommand):
    help = "Compare the database's webhook subscriptions with Graph's list."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the comparison as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            comparison = diagnosis.compare_with_graph(Actor.command("compare_webhooks"))
        except diagnosis.CompareLimited as exc:
            raise CommandError(str(exc)) from None
        if comparison.error:
            raise CommandError(f"Graph could not be listed: {comparison.error}")
        if options["json"]:
            self.stdout.write(json.dumps(comparison.as_json(), default=str, indent=2))
        else:
            for pair in comparison.pairs:
                row = pair.as_json()
                ours = f"#{row['id']} {row['user'] or '(no user)'} {row['kind']} {row['state']}"
                self.stdout.write(
                    f"{ours if pair.sub else '—':<50} {row['graphId'] or '':<38} {pair.verdict}"
                )
            self.stdout.write(f"{comparison.in_step} of {len(comparison.pairs)} in step.")
        out_of_step = [p for p in comparison.pairs if p.state in ("failed", "paused")]
        if out_of_step:
            raise CommandError(f"{len(out_of_step)} out of step (see above).", returncode=1)
