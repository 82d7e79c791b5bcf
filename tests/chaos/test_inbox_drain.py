"""The inbox is the queue: whatever is killed when, every accepted notification is
processed exactly once.

Real processes on the test database: gunicorn serving the receiver, `manage.py drain_inbox`
processes, PostgreSQL itself. A sender plays Graph: it posts each notification until it gets
a 202 (Graph retries for hours). "Processed once" is observed, not inferred: a trigger logs
every committed pending → processed transition of an inbox row (a rolled-back batch's rows
leave no log entry), and each row must appear in that log exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.db import connection

from integrations.microsoft import notifications
from integrations.microsoft.models import MonitoredUser, NotificationInbox
from tests.chaos.conftest import ROOT, db_retry
from tests.chaos.test_postgres_restart import PG_CLUSTER, PG_VERSION, restart_postgres
from tests.conftest import subprocess_env
from tests.integrations.microsoft.webhook_support import make_sub, notification

pytestmark = pytest.mark.chaos

USERS = 8
SECRET = "chaos-client-state"
LOG_SQL = """
CREATE TABLE chaos_inbox_transitions (row_id bigint NOT NULL, status text NOT NULL);
CREATE FUNCTION chaos_log_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_inbox_transitions (row_id, status) VALUES (OLD.id, NEW.status);
    RETURN NEW;
END $$;
CREATE TRIGGER chaos_log_transition AFTER UPDATE OF status ON microsoft_notificationinbox
    FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending')
    EXECUTE FUNCTION chaos_log_transition();
"""
UNLOG_SQL = """
DROP TRIGGER IF EXISTS chaos_log_transition ON microsoft_notificationinbox;
DROP FUNCTION IF EXISTS chaos_log_transition();
DROP TABLE IF EXISTS chaos_inbox_transitions;
"""


@pytest.fixture
def transitions(postgres: None) -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute(UNLOG_SQL)
        cursor.execute(LOG_SQL)
    yield
    db_retry(lambda: connection.cursor().execute(UNLOG_SQL))


@pytest.fixture
def subs(transitions: None) -> list[str]:
    made = []
    for n in range(USERS):
        user = MonitoredUser.objects.create(identifier=f"chaos{n}@x.test", graph_id=f"gc{n}")
        made.append(make_sub(user, graph_id=f"chaos-sub-{n}", client_state=SECRET).graph_id)
    return made


class Processes:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen] = []

    def env(self, **extra: str) -> dict[str, str]:
        return subprocess_env(
            LOG_LEVEL="WARNING",
            ALLOWED_HOSTS="127.0.0.1",
            INBOX_DRAIN_IDLE_SECONDS="0.2",
            INBOX_DRAIN_ALIVE_FILE=str(self.tmp_path / "drain.alive"),
            **extra,
        )

    def _start(self, command: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        # The child keeps its own copy of the log's descriptor; ours is closed at once.
        with open(self.tmp_path / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def web(self, wsgi: str = "portal.wsgi:application", **extra: str) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [str(Path(sys.executable).parent / "gunicorn"), wsgi]
        command += ["--bind", f"127.0.0.1:{port}", "--workers", "2", "--timeout", "30"]
        self._start(command, self.env(PYTHONPATH=str(ROOT), **extra), "web")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/healthz", timeout=1)
                return url
            except requests.RequestException:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)

    def drain(self, **extra: str) -> subprocess.Popen:
        command = [sys.executable, str(ROOT / "manage.py"), "drain_inbox"]
        return self._start(command, self.env(**extra), "drain")

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    yield running
    running.stop()


class Sender:
    """Plays Graph: posts batches of notifications until each is answered 202."""

    def __init__(self, url: str, subs: list[str], count: int, *, batch: int = 5) -> None:
        self.url = f"{url}/api/webhooks/mail"
        self.bodies = []
        for first in range(0, count, batch):
            items = [
                notification(subs[n % len(subs)], SECRET, message_id=f"chaos-{n}", etag=f'"{n}"')
                for n in range(first, min(count, first + batch))
            ]
            self.bodies.append(json.dumps({"value": items}))
        self.answers: Counter = Counter()
        self.lock = threading.Lock()
        self.next = 0

    def run(self, threads: int = 4, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout

        def work() -> None:
            session = requests.Session()
            session.trust_env = False
            while True:
                with self.lock:
                    if self.next >= len(self.bodies):
                        return
                    body = self.bodies[self.next]
                    self.next += 1
                while True:
                    assert time.monotonic() < deadline, "notifications not accepted in time"
                    try:
                        status = str(session.post(self.url, data=body, timeout=10).status_code)
                    except requests.RequestException as exc:
                        status = type(exc).__name__
                        session = requests.Session()
                        session.trust_env = False
                    with self.lock:
                        self.answers[status] += 1
                    if status == "202":
                        break
                    time.sleep(0.1)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()


def wait_drained(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while db_retry(lambda: NotificationInbox.objects.pending().exists()):
        assert time.monotonic() < deadline, "the drain did not empty the inbox"
        time.sleep(0.2)


def assert_each_processed_once(count: int) -> None:
    rows = dict(NotificationInbox.objects.values_list("resource_id", "status"))
    assert len(rows) == count == NotificationInbox.objects.count()  # one row per notification
    assert set(rows) == {f"chaos-{n}" for n in range(count)}  # nothing lost
    assert set(rows.values()) == {"processed"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_id, count(*) FROM chaos_inbox_transitions GROUP BY row_id")
        logged = dict(cursor.fetchall())
    ids = set(NotificationInbox.objects.values_list("id", flat=True))
    assert set(logged) == ids and set(logged.values()) == {1}, "a row was processed twice"
    # Each row names the delta sync it caused, which committed with it.
    assert not NotificationInbox.objects.filter(sync_job__isnull=True).exists()


def test_web_workers_killed_right_after_commit(subs, processes):
    count = 400
    wsgi = "tests.chaos.wsgi_kill_after_commit:application"
    url = processes.web(wsgi, CHAOS_KILL_FRACTION="0.15")
    processes.drain()
    sender = Sender(url, subs, count)
    sender.run()
    answers = dict(sender.answers)
    print(f"\nanswers: {answers}")
    failed = sum(n for status, n in answers.items() if status != "202")
    assert failed >= 5, "few requests were cut short: the test proved little"
    wait_drained()
    # The requests cut short after their commit were posted again and absorbed by dedupe.
    assert_each_processed_once(count)


def in_transaction(app: str, *, any_state: bool = False) -> bool:
    """Whether a connection of `app` is inside a transaction (or, any_state: exists)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            + ("" if any_state else " AND xact_start IS NOT NULL"),
            [app],
        )
        return cursor.fetchone()[0] > 0


def test_drains_killed_mid_batch(subs, processes):
    count = 3000
    for first in range(0, count, 10):
        items = [
            notification(subs[n % USERS], SECRET, message_id=f"chaos-{n}", etag=f'"{n}"')
            for n in range(first, first + 10)
        ]
        notifications.ingest("mail", items)
    rng = random.Random(16)
    kills = mid_batch = 0
    app = "chaos-drain"
    while NotificationInbox.objects.pending().exists() and kills < 12:
        victim = processes.drain(INBOX_DRAIN_BATCH="60", PGAPPNAME=app)
        started = time.monotonic()
        while not in_transaction(app, any_state=True):  # connected: working
            assert victim.poll() is None, "the drain exited"
            assert time.monotonic() - started < 60, "the drain did not connect"
            time.sleep(0.05)
        # Let it work a little, then SIGKILL it at a moment inside a batch's transaction.
        time.sleep(rng.uniform(0, 0.5))
        deadline = time.monotonic() + 2
        inside = False
        while time.monotonic() < deadline and not inside:
            inside = in_transaction(app)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        kills += 1
        mid_batch += inside
    print(f"\n{kills} drains SIGKILLed, {mid_batch} inside a batch's transaction")
    assert mid_batch >= 3, "no kill landed inside a batch"
    processes.drain()  # one that is left alone finishes the work
    wait_drained()
    assert_each_processed_once(count)


def test_postgres_restarted_during_ingest_and_drain(subs, processes):
    if not shutil.which("pg_ctlcluster") or os.geteuid() != 0:
        pytest.skip("needs pg_ctlcluster and root to restart the local PostgreSQL")
    host = connection.settings_dict["HOST"] or "localhost"
    if host not in ("127.0.0.1", "localhost", "::1", "") and not host.startswith("/"):
        pytest.skip("the test database is not this machine's PostgreSQL")
    count = 1500
    url = processes.web()
    drain = processes.drain()
    sender = Sender(url, subs, count, batch=2)
    thread = threading.Thread(target=sender.run, kwargs={"threads": 2, "timeout": 240})
    thread.start()
    deadline = time.monotonic() + 60
    while db_retry(lambda: NotificationInbox.objects.filter(status="processed").count()) < 200:
        assert time.monotonic() < deadline, "nothing was processed"
        time.sleep(0.2)
    took = restart_postgres()
    connection.close()
    print(f"\nPostgreSQL {PG_VERSION}/{PG_CLUSTER} restarted in {took:.1f} s")
    thread.join()
    answers = dict(sender.answers)
    print(f"answers: {answers}")
    assert sender.next == len(sender.bodies)
    wait_drained(timeout=180)
    assert drain.poll() is None, "the drain died with the database instead of reconnecting"
    assert_each_processed_once(count)
    assert set(answers) != {"202"}, "the restart did not interrupt the ingest"
