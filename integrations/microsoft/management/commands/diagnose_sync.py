"""`manage.py diagnose_sync USER [--window 24h|7d] [--json]`: the console's "Why isn't this
syncing?" page from a shell (the same service as the page and GET /api/sync/diagnosis).

USER is a monitored user's UPN, Graph id or identifier. Exit code 1 when the diagnosis finds
a problem, so a script can tell.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.microsoft import diagnosis
from integrations.microsoft.models import MonitoredUser
from portal.access.actors import Actor


class Command(BaseCommand):
    help = "Why isn't this user syncing? The diagnosis and the user's timeline."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="UPN, Graph id or identifier of a monitored user")
        parser.add_argument(
            "--window", choices=list(diagnosis.TIMELINE_WINDOWS), default="24h", help="Period"
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = MonitoredUser.objects.lookup(options["user"])
        if user is None:
            raise CommandError(f"No monitored user {options['user']!r}.")
        report = diagnosis.user_report(Actor.command("diagnose_sync"), user, options["window"])
        if options["json"]:
            self.stdout.write(json.dumps(report.as_json(), default=str, indent=2))
        else:
            self.stdout.write(f"Why isn't {user} syncing?")
            for finding in report.diagnosis:
                mark = {"failed": "PROBLEM", "paused": "note"}.get(finding.state, "ok")
                self.stdout.write(f"  [{mark}] {finding.text}")
            self.stdout.write(f"Timeline, last {report.window} (newest first):")
            for entry in report.entries:
                job = f" (job #{entry.job_id})" if entry.job_id else ""
                self.stdout.write(
                    f"  {entry.at:%Y-%m-%d %H:%M:%S}  {entry.category:<12} {entry.state:<10} "
                    f"{entry.title}{job}{' · ' + entry.detail if entry.detail else ''}"
                )
            if not report.entries:
                self.stdout.write("  nothing happened in this period")
        if any(finding.state == "failed" for finding in report.diagnosis):
            raise CommandError("The diagnosis found a problem (see above).", returncode=1)
