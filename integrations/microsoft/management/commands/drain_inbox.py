"""`manage.py drain_inbox`: the long-running inbox drain (integrations/microsoft/inbox.py).

Started by `runportal` (so by `make run`) and, in Kubernetes, by the `drain` container of
the sync-worker pods. Any number may run at once (they claim with SKIP LOCKED). SIGTERM or
Ctrl-C stops it after the batch in hand commits; a kill rolls that batch back (drained again).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.microsoft import inbox
from portal.lib.gc_freeze import freeze_start_up_objects


class Command(BaseCommand):
    help = "Drain the notification inbox until stopped (--once: until it is empty)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="Drain what is pending now, then exit."
        )
        parser.add_argument(
            "--check-alive",
            type=int,
            metavar="SECONDS",
            help="Liveness probe: exit 1 unless a drain in this container worked in the last "
            "SECONDS (it touches INBOX_DRAIN_ALIVE_FILE).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["check_alive"] is not None:
            self._check_alive(options["check_alive"])
            return
        if options["once"]:
            done = inbox.drain_pending()
            if done.paused:
                raise CommandError(
                    "The inbox drain is paused (Jobs page, Processing): nothing was drained."
                )
            self.stdout.write(
                f"Drained {done.claimed} notifications ({done.processed} processed, "
                f"{done.ignored} ignored, {done.targets} syncs asked) and "
                f"{done.lifecycle} lifecycle events."
            )
            return
        stopping = False

        def request_stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        self.stdout.write("Draining the notification inbox (Ctrl-C to stop).")
        freeze_start_up_objects()
        inbox.run(lambda: stopping)
        self.stdout.write("Inbox drain stopped.")

    def _check_alive(self, max_age: int) -> None:
        path = inbox.alive_file()
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            raise CommandError(f"No drain has worked here yet ({path} is missing).") from None
        if age > max_age:
            raise CommandError(f"The drain last worked {int(age)} s ago.")
        self.stdout.write(f"Drain alive: worked {int(age)} s ago.")
