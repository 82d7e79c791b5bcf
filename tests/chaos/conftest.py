"""Fault tests with real `qcluster` processes, the Graph emulator and PostgreSQL.

They need PostgreSQL (SQLite has one writer and no server to restart) and are skipped on
SQLite with that reason. Each test starts its own clusters on the test database with short
timeouts, points them at the emulator and sends real messages through the outbound jobs.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.db.utils import InterfaceError, OperationalError

from integrations.graph import auth
from integrations.graph_emulator.pytest_plugin import emulator, graph_emulator  # noqa: F401
from integrations.graph_emulator.testing import RunningEmulator
from integrations.microsoft import teams_sender
from portal.access.actors import Actor
from portal.jobs.models import Job
from portal.jobs.runner import release_due_jobs
from portal.jobs.watchdog import requeue_lost_jobs
from tests.conftest import subprocess_env
from tests.integrations.microsoft.conftest import (  # noqa: F401
    _fresh_process_state,
    graph_settings,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def postgres(transactional_db: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip(
            "chaos tests need PostgreSQL (concurrent workers, a server to restart); "
            "run them with DATABASE_URL=postgres://…"
        )


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class Clusters:
    """Real `manage.py qcluster` processes on the test database, pointed at the emulator."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.processes: list[subprocess.Popen] = []
        self.kills = 0
        self.restarts = 0
        self.replaced = 0
        self._handled: set[int] = set()  # exited clusters already replaced or killed on purpose

    def start(self, workers: int = 2) -> subprocess.Popen:
        env = dict(self.env, Q_WORKERS=str(workers))
        # The child keeps its own copy of the log's descriptor; ours is closed at once.
        with open(self.log_path(), "ab") as log:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), "qcluster"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def log_path(self) -> str:
        return self.env["CHAOS_LOG"]

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.processes if p.poll() is None]

    def descendants(self) -> set[int]:
        """Every process below the clusters' main processes (sentinel, pusher, monitor,
        workers)."""
        found: set[int] = set()
        todo = [p.pid for p in self.alive()]
        while todo:
            pid = todo.pop()
            for child in _children(pid):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def workers_of(self, process: subprocess.Popen, workers: int = 2) -> list[int]:
        """A cluster's worker processes: the sentinel spawns them first, then the monitor and
        the pusher."""
        (sentinel,) = _children(process.pid)
        return sorted(_children(sentinel))[:workers]

    def kill_random(self, rng: random.Random) -> int | None:
        """SIGKILL a worker in the middle of a job, now and then any cluster process but a
        sentinel (whose loss stops a cluster: that is the whole-cluster case below)."""
        sentinels = {c for p in self.alive() for c in _children(p.pid)}
        candidates = self.descendants() - sentinels
        running = {
            int(w.rpartition(":")[2])
            for w in Job.objects.filter(status=Job.Status.RUNNING).values_list("worker", flat=True)
            if ":" in w
        }
        busy = sorted(candidates & running)
        pool = busy if busy and rng.random() < 0.8 else sorted(candidates)
        if not pool:
            return None
        victim = rng.choice(pool)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return None
        self.kills += 1
        return victim

    def replace_exited(self, workers: int = 2) -> None:
        """Start a new cluster for each one that exited, as runportal and Kubernetes do: a
        cluster that lost its monitor, its pusher or an idle worker exits to start over
        (portal/jobs/cluster_guard.py), and without a supervisor the kills would thin out
        the clusters until a stall."""
        for process in list(self.processes):
            if process.poll() is not None and process.pid not in self._handled:
                self._handled.add(process.pid)
                self.start(workers)
                self.replaced += 1

    def restart_all(self, workers: int = 2) -> None:
        """SIGKILL every cluster (a stuck one, or to simulate a node loss) and start anew."""
        count = len(self.alive()) or 1
        self.kill_all()
        for _ in range(count):
            self.start(workers)
        self.restarts += 1

    def kill_all(self) -> None:
        for process in self.processes:
            self._handled.add(process.pid)
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # leftovers of killed sentinels


def worker_env(emu: RunningEmulator, tmp_path: Path, **extra: str) -> dict[str, str]:
    return subprocess_env(
        MICROSOFT_AUTHORITY_HOST=emu.authority_host,
        MICROSOFT_GRAPH_URL=emu.graph_url,
        MICROSOFT_TENANT_ID=emu.tenant_id,
        MICROSOFT_CLIENT_ID=emu.client_id,
        MICROSOFT_CLIENT_SECRET=emu.client_secret,
        MICROSOFT_CA_BUNDLE=emu.ca_path,
        MICROSOFT_ALLOW_EMULATOR="true",
        GRAPH_MAX_IN_PROCESS_WAIT_SECONDS="5",
        GRAPH_BACKOFF_BASE_SECONDS="0.05",
        Q_TIMEOUT="10",
        Q_RETRY="15",
        LOG_LEVEL="WARNING",
        MESSAGING_SEND_SETTLE_SECONDS="2",
        MESSAGING_TEAMS_SETTLE_SECONDS="1",
        CHAOS_LOG=str(tmp_path / "qcluster.log"),
        **extra,
    )


@pytest.fixture
def clusters(
    postgres: None,
    graph_settings: Any,
    emulator: RunningEmulator,
    tmp_path: Path,
) -> Iterator[Callable[..., Clusters]]:
    auth.app_token()  # bootstrap the credential store once, in this process
    made: list[Clusters] = []

    def make(**extra: str) -> Clusters:
        cluster_set = Clusters(worker_env(emulator, tmp_path, **extra))
        made.append(cluster_set)
        return cluster_set

    yield make
    for cluster_set in made:
        cluster_set.stop()


def connect_sender(emu: RunningEmulator) -> None:
    """Connect the Teams sender account (the emulator signs the service account in)."""

    admin = get_user_model().objects.create_user("chaos-admin", password="x" * 20)
    admin.groups.add(Group.objects.get(name="admin"))  # the role, not a superuser flag
    actor = Actor(kind="user", name="chaos-admin", role="admin", user=admin)
    redirect_uri = "http://127.0.0.1:8000/credentials/teams-sender/callback"
    emu.control.set_redirect_uris(emu.client_id, [redirect_uri])
    auth_url, flow = teams_sender.start_delegated_connect(
        redirect_uri,
        login_hint=emu.service_account_upn,
        prompt=None,
    )
    response = emu.session().get(auth_url, allow_redirects=False, timeout=10)
    params = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
    teams_sender.complete_delegated_connect(actor, flow, params)


def db_retry(func: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Run an ORM call from the test process, reconnecting while the database restarts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return func()
        except (OperationalError, InterfaceError):
            connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def housekeeping() -> None:
    """What the schedules do once a minute (release due retries, the watchdog), sooner."""

    requeue_lost_jobs()
    release_due_jobs()


def wait_until_done(
    job_ids: list[int],
    timeout: float,
    *,
    each_second: Callable[[], None] | None = None,
    on_stall: Callable[[], None] | None = None,
    stall_after: float = 20.0,
) -> dict[str, int]:
    """Poll until every job has finished (succeeded/dead/cancelled); return status counts."""
    deadline = time.monotonic() + timeout
    last_progress, last_done = time.monotonic(), -1
    while True:
        counts = db_retry(lambda: _status_counts(job_ids))
        done = sum(counts.get(s, 0) for s in ("succeeded", "dead", "cancelled"))
        if done == len(job_ids):
            return counts
        now = time.monotonic()
        if done != last_done:
            last_done, last_progress = done, now
        elif on_stall is not None and now - last_progress > stall_after:
            on_stall()
            last_progress = now
        if now > deadline:
            raise AssertionError(f"jobs not finished in {timeout:.0f} s: {counts}")
        db_retry(housekeeping)
        if each_second is not None:
            each_second()
        time.sleep(0.5)


def _status_counts(job_ids: list[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in Job.objects.filter(pk__in=job_ids).values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts
