from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
from unittest import mock
from urllib.parse import quote

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import connection
from django.db.backends.postgresql.operations import DatabaseOperations
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from integrations.microsoft.notifications import forget_answers, forget_subscription
from portal.jobs.runner import run_job

# Playwright's sync API keeps an event loop in the main thread; Django would otherwise refuse
# ORM calls from tests that also drive the browser .
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"


def _flush_past_the_audit_truncate_trigger() -> None:
    """Transactional tests end with a flush (TRUNCATE of every table), which the audit
    tables' BEFORE TRUNCATE trigger refuses on PostgreSQL. The test database's superuser may
    skip triggers for the flush (session_replication_role is superuser-only), as an operator
    wiping a test system would; the app's role can do neither."""

    original = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        statements = original(
            self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )
        if not statements:
            return statements
        return ["SET LOCAL session_replication_role = replica", *statements]

    DatabaseOperations.sql_flush = sql_flush


_flush_past_the_audit_truncate_trigger()


# --------------------------------------------------------------------------- no network
# The suite talks to nothing but this machine: PostgreSQL, Redis, the emulator, live_server
# and chromium are all on loopback. Any other connect() from the test process is refused
# (SocketBlocked, not an OSError, so no "unreachable" handler swallows it) and fails the test
# even if the code under test catches it. Subprocesses (workers, chromium) are not patched.


class SocketBlocked(RuntimeError):
    """A test tried to reach a host other than this machine."""


_ATTEMPTS: list[str] = []
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(sock: socket.socket, address: object) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # AF_UNIX and friends never leave the machine
    host = address[0] if isinstance(address, tuple) else address
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:  # a name: every address it resolves to must be loopback
        try:
            infos = socket.getaddrinfo(str(host), None)
        except OSError:
            return False
        return bool(infos) and all(
            ipaddress.ip_address(info[4][0].split("%", 1)[0]).is_loopback for info in infos
        )


def _refuse(sock: socket.socket, address: object) -> None:
    if not _is_local(sock, address):
        _ATTEMPTS.append(repr(address))
        sock.close()  # callers close only on OSError, and this is deliberately not one
        raise SocketBlocked(f"tests may only connect to loopback, not {address!r}")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _refuse(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _refuse(self, address)
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _loopback_only():
    """Fail a test that tried to reach another machine, even if its code caught the error."""
    _ATTEMPTS.clear()
    yield
    if _ATTEMPTS:
        attempts = ", ".join(_ATTEMPTS)
        _ATTEMPTS.clear()
        pytest.fail(f"The test tried to reach the network: {attempts}", pytrace=False)


@pytest.fixture
def stub(monkeypatch):
    """`stub(module, "name", return_value=…/side_effect=…)`: replace a service with a mock of
    the same signature (mock.create_autospec), so a caller that passes other arguments fails
    the test instead of production. Returns the mock (call_args, called…)."""
    originals: dict[tuple[int, str], object] = {}

    def replace(module, name, **behaviour):
        # Stubbing again (a test changing a fixture's stub) specs from the real function.
        original = originals.setdefault((id(module), name), getattr(module, name))
        fake = mock.create_autospec(original, **behaviour)
        monkeypatch.setattr(module, name, fake)
        return fake

    return replace


@pytest.fixture(autouse=True)
def _receiver_forgets_subscriptions() -> None:
    """The webhook receiver caches clientStates by subscription id per process; tests reuse
    ids such as "sub-1" with other secrets and rolled-back rows (Graph never does). Its
    answer counts not written yet are dropped too."""
    forget_subscription()
    forget_answers()


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache: rate-limit counters (keyed by user ids, which a
    rolled-back test may hand out again) never leak from one test into the next."""
    cache.clear()
    yield


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


# Named personas, one per role, for permission tests.
PERSONAS = {
    "viewer": "vera-viewer",
    "support": "sam-support",
    "operator": "otto-operator",
    "admin": "ada-admin",
}
PERSONA_PASSWORD = "correct horse battery staple 42"

# The main navigation each role sees, in order (its groups' entries one after another).
NAV_BY_ROLE = {
    "viewer": [
        "Dashboard",
        "Alerts",
        "Subscriptions",
        "Users & sync",
        "Graph calls",
        "Jobs",
        "Approvals",
        "Messages",
        "Settings",
    ],
    "support": [
        "Dashboard",
        "Alerts",
        "Subscriptions",
        "Users & sync",
        "Graph calls",
        "Verify",
        "Jobs",
        "Approvals",
        "Messages",
        "Settings",
        "Audit log",
    ],
    "admin": [
        "Dashboard",
        "Alerts",
        "Subscriptions",
        "Users & sync",
        "Graph calls",
        "Verify",
        "Credentials",
        "Jobs",
        "Recovery",
        "Approvals",
        "Messages",
        "Event endpoints",
        "Service clients",
        "API tokens",
        "Settings",
        "Audit log",
        "People",
        "Django admin",
    ],
}
NAV_BY_ROLE["operator"] = NAV_BY_ROLE["support"]


def make_persona(role: str):
    user = get_user_model().objects.create_user(PERSONAS[role], password=PERSONA_PASSWORD)
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def vera_viewer(db):
    return make_persona("viewer")


@pytest.fixture
def sam_support(db):
    return make_persona("support")


@pytest.fixture
def otto_operator(db):
    return make_persona("operator")


@pytest.fixture
def ada_admin(db):
    return make_persona("admin")


@pytest.fixture
def personas(db):
    """Every persona, by role."""
    return {role: make_persona(role) for role in PERSONAS}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a portal subprocess (worker, command) that uses the test database."""

    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(PORTAL_IGNORE_DOTENV="1", DJANGO_SETTINGS_MODULE="portal.settings_test")
    if connection.vendor == "postgresql":
        auth = quote(db["USER"] or "", safe="")
        if db["PASSWORD"]:
            auth += ":" + quote(db["PASSWORD"], safe="")
        host = db["HOST"] or "127.0.0.1"
        port = f":{db['PORT']}" if db["PORT"] else ""
        env["DATABASE_URL"] = f"postgres://{auth}@{host}{port}/{db['NAME']}"
    else:
        env["SQLITE_PATH"] = str(db["NAME"])
    env.update(extra)
    return env


@pytest.fixture
def qcluster(transactional_db):
    """Start real django-q2 worker processes on the test database; stop them afterwards."""

    started = []

    def start(workers: int = 2, **extra: str) -> subprocess.Popen:
        env = subprocess_env(
            **{
                "Q_WORKERS": str(workers),
                "Q_TIMEOUT": "20",
                "Q_RETRY": "30",
                "JOB_HANDLER_MODULES": "tests.portal.jobs.handlers",
                **extra,
            }
        )
        process = subprocess.Popen(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()  # the cluster's main process stops its workers itself
    for process in started:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_queued_jobs(rounds: int = 1) -> list[str]:
    """Run what is on django-q2's ORM broker in this process, as a worker would.

    One round runs what is queued now; more rounds also run what those jobs queued
    (notification → delta sync → continuation). Returns each run's outcome.
    """

    outcomes: list[str] = []
    for _ in range(rounds):
        rows = list(OrmQ.objects.order_by("id"))
        if not rows:
            break
        for row in rows:
            task = SignedPackage.loads(row.payload)
            row.delete()
            outcomes.append(run_job(task["args"][0]))
    return outcomes
