"""Run the whole portal in one terminal: the web server and the django-q2 worker.

Ctrl-C (or SIGTERM) stops every process cleanly; if one of them dies, the others are stopped
too, so a half-running portal never pretends to be healthy.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

STOP_GRACE_SECONDS = 10


class Command(BaseCommand):
    help = "Run the web server and the background worker together (what `make run` starts)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=None, help="Web port (default: PORT).")
        parser.add_argument("--no-worker", action="store_true", help="Do not start qcluster.")

    def handle(self, *args: Any, **options: Any) -> None:
        port = options["port"] or settings.PORT
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        commands: dict[str, list[str]] = {}
        if not options["no_worker"]:
            commands["worker"] = [*manage, "qcluster"]
        commands["web"] = [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"]

        stopping = False

        def request_stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        processes: dict[str, subprocess.Popen] = {}
        for name, command in commands.items():
            # Own process groups: our signal handler decides when and how they stop.
            processes[name] = subprocess.Popen(command, start_new_session=True)
            self.stdout.write(f"started {name} (pid {processes[name].pid})")
        self.stdout.write(f"Portal on http://127.0.0.1:{port}/ — press Ctrl-C to stop.")

        exit_code = 0
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None:
                    self.stderr.write(f"{name} exited with status {process.returncode}; stopping.")
                    exit_code = process.returncode or 1
                    stopping = True
                    break
            time.sleep(0.3)
        self._stop_all(processes)
        if exit_code:
            sys.exit(exit_code)

    def _stop_all(self, processes: dict[str, subprocess.Popen]) -> None:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, process in processes.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in {STOP_GRACE_SECONDS}s; killing it.")
                process.kill()
                process.wait()
        self.stdout.write("Stopped.")
