"""Shared set-up for benchmarks: a dedicated PostgreSQL database and portal subprocesses."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/fleet_bench"


def bench_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PORTAL_IGNORE_DOTENV="1",
        DJANGO_SETTINGS_MODULE="bench.settings",
        SECRET_KEY=env.get("SECRET_KEY") or secrets.token_urlsafe(50),
        DEBUG="false",
        SECURE_SSL_REDIRECT="false",
        SECURE_COOKIES="false",
        DATABASE_URL=env.get("BENCH_DATABASE_URL", DEFAULT_DB),
        FIELD_ENCRYPTION_KEYS=env.get("FIELD_ENCRYPTION_KEYS")
        or "Z7v0bqVXc3L8RJd2f5m9gQq5bUq1ZkBl3sRr8uH1o2U=",
        LOG_LEVEL="WARNING",
        # Production settings require a keyed audit chain. A fixed key (like the encryption key
        # above) keeps the bench database's chain verifiable from one run to the next.
        AUDIT_CHAIN_KEY=env.get("AUDIT_CHAIN_KEY")
        or "bench:not-a-secret-only-for-the-benchmark-database-0001",
    )
    env.update(extra)
    return env


def ensure_database(env: dict[str, str]) -> None:
    """Create the benchmark database if needed and migrate it."""
    from urllib.parse import urlsplit

    url = urlsplit(env["DATABASE_URL"])
    name = url.path.lstrip("/")
    subprocess.run(
        [
            "psql",
            "-h",
            url.hostname or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname='{name}'",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip() == "1" or subprocess.run(
        [
            "psql",
            "-h",
            url.hostname or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            "-c",
            f"CREATE DATABASE {name}",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], env=env, check=True)


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def start_cluster(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "qcluster"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(predicate, timeout: float, interval: float = 0.05) -> float:
    """Seconds until predicate() is true; raises on timeout."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("benchmark did not finish in time")
        time.sleep(interval)
    return time.perf_counter() - start
