"""`manage.py verify_integration [--json] [--timeout N]`: the integration checklist.

Exit status 0 only when every check passes (the runbook's `npm run verify:integration`).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.microsoft.verify import verify_integration
from portal.access.actors import Actor


class Command(BaseCommand):
    help = "Check configuration, tokens, Graph, permissions, webhooks, worker and queue."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
        parser.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            help="Seconds each check may wait on the network (default 10).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["timeout"] <= 0:
            raise CommandError("--timeout must be positive.")
        results = verify_integration(
            Actor.command("verify_integration"), timeout=options["timeout"]
        )
        failed = [r for r in results if not r.ok]
        if options["json"]:
            self.stdout.write(
                json.dumps({"ok": not failed, "checks": [r.as_dict() for r in results]}, indent=2)
            )
        else:
            for result in results:
                mark = self.style.SUCCESS("✔") if result.ok else self.style.ERROR("✘")
                self.stdout.write(f"{mark} {result.name}: {result.detail}")
        if failed:
            raise CommandError(
                f"{len(failed)} of {len(results)} checks failed: "
                f"{', '.join(r.name for r in failed)}",
                returncode=1,
            )
        if not options["json"]:
            self.stdout.write(self.style.SUCCESS(f"All {len(results)} checks passed."))
