from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.jobs.liveness import WORKER_STALE_AFTER, worker_heartbeat_age


class Command(BaseCommand):
    help = "Exit 0 if a worker was seen recently (the sync-worker pods' liveness probe)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-age",
            type=int,
            default=int(WORKER_STALE_AFTER.total_seconds()),
            help="Seconds since the last heartbeat (default 180).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        age = worker_heartbeat_age()
        if age is None:
            raise CommandError("No worker has ever reported a heartbeat.")
        if age > options["max_age"]:
            raise CommandError(f"The last worker heartbeat was {int(age)} s ago.")
        self.stdout.write(f"Worker alive: last heartbeat {int(age)} s ago.")
