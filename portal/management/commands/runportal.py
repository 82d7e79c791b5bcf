"""Run the whole portal in one terminal: the Graph emulator (demo tenant), the web server,
the django-q2 workers (the main queue's, and the event deliveries') and the notification
inbox drain.

Ctrl-C (or SIGTERM) stops every process cleanly; if one of them dies, the others are stopped
too, so a half-running portal never pretends to be healthy. The workers are the exception: a
django-q2 cluster that lost a process exits to start over (portal/jobs/cluster_guard.py), so an
exited worker is started again, unless it exited right after its start.

The emulator starts when no real tenant is configured (or the configured one is the
emulator). On its first start its demo app's values are added to `.env` — only keys that are
missing, so a `.env` pointing at a real tenant is never changed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections
from django.urls import reverse

from portal.access.management.commands.create_demo_users import demo_passwords_file
from portal.jobs.liveness import worker_heartbeat_age

STOP_GRACE_SECONDS = 10
WORKERS = ("worker", "event-worker")  # django-q2 clusters: the main queue's, the events queue's
WORKER_STUCK_SECONDS = 300


def demo_redirect_uris(port: int) -> list[str]:
    """What the demo app registration lists, exactly as the portal sends them (Entra, and the
    emulator, match redirect URIs exactly): staff sign-in and the Teams sender's sign-in, on
    both names the demo's ALLOWED_HOSTS accept."""
    paths = [reverse("sso_callback"), settings.MICROSOFT_DELEGATED_REDIRECT_PATH]
    if settings.SSO_REDIRECT_URI:
        paths = paths[1:]
    uris = [settings.SSO_REDIRECT_URI] if settings.SSO_REDIRECT_URI else []
    uris += [f"http://{host}:{port}{path}" for host in ("127.0.0.1", "localhost") for path in paths]
    return uris


class Command(BaseCommand):
    help = (
        "Run the web server, the background worker and the inbox drain together "
        "(what `make run` starts)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=None, help="Web port (default: PORT).")
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="Do not start qcluster nor the inbox drain.",
        )
        parser.add_argument(
            "--emulator",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Start the Graph emulator (default: when no real tenant is configured).",
        )

    def handle(self, *args: Any, **options: Any) -> None:  # noqa: C901 (the supervisor loop handles each child's exit where seen)
        port = options["port"] or settings.PORT
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        use_emulator = options["emulator"]
        if use_emulator is None:
            use_emulator = settings.USING_EMULATOR or not settings.MICROSOFT_TENANT_ID

        stopping = False

        def request_stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        processes: dict[str, subprocess.Popen] = {}
        if use_emulator:
            state_dir = Path(settings.EMULATOR_STATE_DIR)
            processes["emulator"] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "integrations.graph_emulator",
                    "--port",
                    str(settings.EMULATOR_PORT),
                    "--state-dir",
                    str(state_dir),
                    "--demo",
                    *(arg for uri in demo_redirect_uris(port) for arg in ("--redirect-uri", uri)),
                ],
                cwd=settings.BASE_DIR,
                start_new_session=True,
            )
            self.stdout.write(f"started emulator (pid {processes['emulator'].pid})")
            if not self._wait_for_file(state_dir / "demo-tenant.json", processes["emulator"]):
                self._stop_all(processes)
                sys.exit("The Graph emulator did not start; see its output above.")
            self._add_emulator_to_env(state_dir / "demo-tenant.json")

        commands: dict[str, list[str]] = {}
        envs: dict[str, dict[str, str]] = {}
        if not options["no_worker"]:
            commands["worker"] = [*manage, "qcluster"]
            # Event deliveries have a queue and workers of their own: a slow event endpoint
            # never holds a worker that Graph work needs.
            commands["event-worker"] = [*manage, "qcluster"]
            envs["event-worker"] = {
                **os.environ,
                "WORKER_QUEUE": "events",
                "Q_WORKERS": str(settings.EVENT_DELIVERY_WORKERS),
            }
            # The inbox is the queue: this process turns stored notifications into syncs.
            commands["drain"] = [*manage, "drain_inbox"]
        # gunicorn, as deployed (deploy/Dockerfile), not runserver: runserver closes the
        # database connections after every request, so each request (a Graph notification
        # included) paid a new PostgreSQL connection, ~12 ms of bench/end_to_end's 15 ms
        # between a notification's arrival and its drain. gthread workers keep theirs.
        commands["web"] = [
            sys.executable,
            "-m",
            "gunicorn",
            "portal.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--graceful-timeout",
            str(STOP_GRACE_SECONDS // 2),
            # Its default path is per user: two portals on one machine would share it.
            "--no-control-socket",
        ]

        def start(name: str) -> subprocess.Popen:
            # Own process groups: our signal handler decides when and how they stop.
            return subprocess.Popen(
                commands[name], env=envs.get(name), cwd=settings.BASE_DIR, start_new_session=True
            )

        for name in commands:
            processes[name] = start(name)
            self.stdout.write(f"started {name} (pid {processes[name].pid})")
        self.stdout.write(f"Portal on http://127.0.0.1:{port}/ — press Ctrl-C to stop.")
        web_up = self._wait_for_web(port, processes["web"])
        if use_emulator and web_up:
            # Webhook set-up needs our receiver up: the emulator calls it back.
            subprocess.run([*manage, "demo_bootstrap"], check=False)
        if web_up:
            # Last, after the migrations' and the processes' start-up lines.
            tenant_file = Path(settings.EMULATOR_STATE_DIR) / "demo-tenant.json"
            self.stdout.write(startup_box(port, tenant_file if use_emulator else None))

        exit_code = 0
        min_uptime = settings.RUNPORTAL_WORKER_MIN_UPTIME_SECONDS  # sooner: failing to start
        next_check = time.monotonic()
        started = dict.fromkeys(WORKERS, next_check)
        while not stopping:
            now = time.monotonic()
            for name, process in list(processes.items()):
                if process.poll() is None:
                    continue
                if name in WORKERS and now - started[name] > min_uptime:
                    # A cluster that lost a process on one of its queues exits to start over
                    # (portal/jobs/cluster_guard.py): that is this supervisor's part.
                    self.stderr.write(
                        f"{name} exited with status {process.returncode}; starting a new one."
                    )
                    processes[name] = start(name)
                    started[name] = now
                    continue
                self.stderr.write(f"{name} exited with status {process.returncode}; stopping.")
                exit_code = process.returncode or 1
                stopping = True
                break
            if "worker" in processes and not stopping and now >= next_check:
                next_check = now + 60
                if now - started["worker"] > WORKER_STUCK_SECONDS and self._worker_stuck():
                    # The backstop for a hang the cluster guard cannot see; in Kubernetes the
                    # worker_health probe restarts it, here we do.
                    self.stderr.write(
                        "The worker has sent no heartbeat for "
                        f"{WORKER_STUCK_SECONDS} s; restarting it."
                    )
                    self._stop_all({"worker": processes["worker"]})
                    processes["worker"] = start("worker")
                    started["worker"] = now
            time.sleep(0.3)
        self._stop_all(processes)
        if exit_code:
            sys.exit(exit_code)

    @staticmethod
    def _worker_stuck() -> bool:
        close_old_connections()
        age = worker_heartbeat_age()
        return age is not None and age > WORKER_STUCK_SECONDS

    @staticmethod
    def _wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if path.exists() and json.loads(path.read_text()):
                    return True
            except ValueError:
                pass
            time.sleep(0.2)
        return False

    @staticmethod
    def _wait_for_web(port: int, process: subprocess.Popen, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    return True
            except OSError:
                time.sleep(0.3)
        return False

    def _add_emulator_to_env(self, tenant_file: Path) -> None:
        tenant = json.loads(tenant_file.read_text())
        wanted = {
            "MICROSOFT_TENANT_ID": tenant["tenant_id"],
            "MICROSOFT_CLIENT_ID": tenant["client_id"],
            "MICROSOFT_CLIENT_SECRET": tenant["client_secret"],
            "MICROSOFT_AUTHORITY_HOST": tenant["authority_host"],
            "MICROSOFT_GRAPH_URL": tenant["graph_url"],
            "MICROSOFT_CA_BUNDLE": tenant["ca_bundle"],
            # "Sign in with Microsoft" against the emulator's demo staff (docs/sso.md).
            "SSO_ENABLED": "true",
            "SSO_TRUST_ENTRA_MFA": "true",
        }
        if tenant.get("service_account_upn"):
            # The demo's Teams sender has a mailbox: the send API may send mail from it too, so
            # docs/fleet-integration.md's examples work against `make run` as printed.
            wanted["MESSAGING_SENDER_MAILBOXES"] = tenant["service_account_upn"]
        if tenant.get("workload_token_file"):
            # Offered on the Credentials page as "workload identity" (the emulator is its issuer).
            wanted["MICROSOFT_CLIENT_ASSERTION_FILE"] = tenant["workload_token_file"]
        if settings.DOTENV_FILE is None:
            # PORTAL_IGNORE_DOTENV: settings come from the environment only (the benchmarks
            # set the emulator's values there); a .env written now would be read by nobody.
            return
        env_file = Path(settings.DOTENV_FILE)
        existing = env_file.read_text() if env_file.exists() else ""
        present = {
            line.split("=", 1)[0].strip()
            for line in existing.splitlines()
            if "=" in line and not line.lstrip().startswith("#")
        }
        missing = {k: v for k, v in wanted.items() if k not in present}
        if missing:
            lines = ["", "# The local Graph emulator's demo tenant (added by make run)."]
            lines += [f"{key}={value}" for key, value in missing.items()]
            with env_file.open("a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
            self.stdout.write("Pointed .env at the emulator's demo tenant.")

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


def startup_box(port: int, tenant_file: Path | None) -> str:
    """What someone who just typed `make run` needs, in a box: where, as whom, how to stop."""
    lines = [f"Fleet Graph Portal: http://127.0.0.1:{port}/", ""]
    passwords_file = demo_passwords_file()
    passwords = json.loads(passwords_file.read_text()) if passwords_file.exists() else {}
    if passwords:
        lines.append("Sign in with a password (demo accounts, one per role):")
        lines += [f"  {name:<15} {password}" for name, password in sorted(passwords.items())]
        lines.append("  Changed one? New password: python manage.py portal_user set-password NAME")
        lines.append("")
    known = tenant_file is not None and tenant_file.exists()
    staff = json.loads(tenant_file.read_text()).get("sign_in_staff", {}) if known else {}  # type: ignore[union-attr]
    if staff:
        lines.append('Or "Sign in with Microsoft" and pick demo staff (no password):')
        lines += [f"  {upn:<42} {role}" for upn, role in staff.items()]
        lines.append("")
    lines.append("Stop: Ctrl-C (everything stops together). Start again: make run")
    width = max(len(line) for line in lines)
    rule = "─" * (width + 2)
    return "\n".join(
        ["", f"┌{rule}┐", *(f"│ {line:<{width}} │" for line in lines), f"└{rule}┘", ""]
    )
