"""Shared set-up for benchmarks: a dedicated PostgreSQL database and portal subprocesses."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def emulator_env(emulator: Any) -> dict[str, str]:
    """The settings that point the portal at a RunningEmulator (its app, CA and hosts)."""
    return {
        "MICROSOFT_AUTHORITY_HOST": emulator.authority_host,
        "MICROSOFT_GRAPH_URL": emulator.graph_url,
        "MICROSOFT_TENANT_ID": emulator.tenant_id,
        "MICROSOFT_CLIENT_ID": emulator.client_id,
        "MICROSOFT_CLIENT_SECRET": emulator.client_secret,
        "MICROSOFT_CA_BUNDLE": emulator.ca_path,
        "MICROSOFT_ALLOW_EMULATOR": "true",
    }


def _database(env: dict[str, str]) -> tuple[str, list[str]]:
    """The benchmark database's name and a psql command line on the server's `postgres` db."""
    url = urlsplit(env["DATABASE_URL"])
    psql = [
        "psql",
        "-h",
        url.hostname or "127.0.0.1",
        "-p",
        str(url.port or 5432),
        "-U",
        url.username or "postgres",
        "-d",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
    ]
    return url.path.lstrip("/"), psql


def _migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], env=env, check=True)


def ensure_database(env: dict[str, str]) -> None:
    """Create the benchmark database if needed and migrate it."""
    name, psql = _database(env)
    exists = subprocess.run(
        [*psql, "-tAc", f"SELECT 1 FROM pg_database WHERE datname='{name}'"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if exists != "1":
        subprocess.run([*psql, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    _migrate(env)


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def start_cluster(env: dict[str, str], queue: str = "") -> subprocess.Popen:
    """A qcluster on the main queue, or on `queue` ("events": the event deliveries')."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "qcluster"],
        env={**env, "WORKER_QUEUE": queue},
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


# --------------------------------------------------------------------------- whole portal


def fresh_database(env: dict[str, str]) -> None:
    """Drop and recreate the benchmark database, then migrate it (a run starts empty: the
    audit tables refuse TRUNCATE, so `flush` cannot empty them)."""
    name, psql = _database(env)
    if not name.startswith(("fleet_", "bench")):
        raise SystemExit(f"refusing to drop database {name!r}: not a benchmark database")
    subprocess.run([*psql, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=True)
    subprocess.run([*psql, "-qc", f"CREATE DATABASE {name}"], check=True)
    _migrate(env)


class PrivatePostgres:
    """A PostgreSQL instance of our own (initdb under /tmp, its own port), so a benchmark can
    restart it without cutting other people's connections to the machine's shared server."""

    def __init__(self, port: int, data_dir: Path, bin_dir: str = "/usr/lib/postgresql/15/bin"):
        self.port = port
        self.data_dir = data_dir
        self.bin = Path(bin_dir)
        self.log = data_dir.parent / f"{data_dir.name}.log"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        # No pipes: a (re)started postmaster would inherit them and keep them open.
        subprocess.run(
            command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180
        )

    def start(self) -> str:
        import shutil

        if self.data_dir.exists():
            self._stop_quietly()
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
            self.log.touch()
            shutil.chown(self.log, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp "
            "-c max_connections=200 -c fsync=on -c shared_buffers=128MB"
        )
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log), "-o", options, "-w", "start"
        )
        return f"postgres://postgres@127.0.0.1:{self.port}/fleet_bench_private"

    def restart(self) -> float:
        """A fast restart (every connection is cut, as when a server is failed over)."""
        started = time.monotonic()
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log), "-m", "fast", "-w", "restart"
        )
        return time.monotonic() - started

    def _stop_quietly(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def stop(self, keep_data: bool = False) -> None:
        """Stop it; its data directory is removed unless kept (to look into a failed run)."""
        import shutil

        self._stop_quietly()
        if not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class Portal:
    """The portal as `make run` starts it: `manage.py runportal` with the Graph emulator (demo
    tenant), the web server and the worker, plus whatever else runportal starts."""

    def __init__(self, env: dict[str, str], web_port: int, emulator_port: int, state_dir: Path):
        self.web_port = web_port
        self.emulator_port = emulator_port
        self.state_dir = state_dir
        self.env = dict(env)
        self.process: subprocess.Popen | None = None
        self.log_path = state_dir / "runportal.log"
        self.control_token = ""

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def prepare(self) -> dict[str, str]:
        """Start the emulator once on its own to create its identity (tenant, app, secret,
        CA), and return the environment that points the portal at it. runportal's emulator
        reuses the identity from the same state directory."""
        import json

        self.state_dir.mkdir(parents=True, exist_ok=True)
        tenant_file = self.state_dir / "demo-tenant.json"
        tenant_file.unlink(missing_ok=True)
        emulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "integrations.graph_emulator",
                "--port",
                str(self.emulator_port),
                "--state-dir",
                str(self.state_dir),
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for(lambda: tenant_file.exists() and tenant_file.stat().st_size > 0, 60, 0.1)
            tenant = json.loads(tenant_file.read_text())
        finally:
            stop(emulator)
        self.control_token = tenant["control_token"]
        self.env.update(
            MICROSOFT_TENANT_ID=tenant["tenant_id"],
            MICROSOFT_CLIENT_ID=tenant["client_id"],
            MICROSOFT_CLIENT_SECRET=tenant["client_secret"],
            MICROSOFT_AUTHORITY_HOST=tenant["authority_host"],
            MICROSOFT_GRAPH_URL=tenant["graph_url"],
            MICROSOFT_CA_BUNDLE=tenant["ca_bundle"],
            MICROSOFT_ALLOW_EMULATOR="true",
            EMULATOR_PORT=str(self.emulator_port),
            EMULATOR_STATE_DIR=str(self.state_dir),
            PORT=str(self.web_port),
            ALLOWED_HOSTS="127.0.0.1,localhost",
        )
        return self.env

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runportal", "--port", str(self.web_port)],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, subscriptions: int, timeout: float = 180) -> None:
        """Until the web answers and runportal's demo_bootstrap has `subscriptions` active."""
        import urllib.request

        from integrations.microsoft.models import Subscription

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"runportal exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.web_url}/healthz", timeout=2):
                    pass
            except OSError:
                return False
            return Subscription.objects.filter(state="active").count() >= subscriptions

        wait_for(ready, timeout, 0.5)

    def control(self, method: str, path: str, body: object = None) -> dict:
        import requests

        response = requests.request(
            method,
            f"https://127.0.0.1:{self.emulator_port}/_emulator/{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.control_token}"},
            verify=str(self.state_dir / "ca.pem"),
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    def children(self) -> dict[str, list[int]]:
        """The pids under runportal by role: web, worker (the whole qcluster tree and the
        inbox drain), emulator."""
        if self.process is None:
            return {}
        tree: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
        roles: dict[str, list[int]] = {"web": [], "worker": [], "emulator": [], "other": []}
        for child in tree.get(self.process.pid, []):
            try:
                cmdline = (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [w.decode(errors="replace") for w in cmdline]
            role = (
                "web"
                if "gunicorn" in words
                else "worker"
                if "qcluster" in words or "drain_inbox" in words
                else "emulator"
                if "integrations.graph_emulator" in words
                else "other"
            )
            stack = [child]
            while stack:
                pid = stack.pop()
                roles[role].append(pid)
                stack.extend(tree.get(pid, []))
        return roles

    def worker_processes(self) -> list[int]:
        """django-q2's workers, pusher and monitor: the qcluster tree below its sentinel."""
        tree = [
            pid
            for pid in self.children()["worker"]
            if b"drain_inbox" not in (Path("/proc") / str(pid) / "cmdline").read_bytes()
        ]
        main = [pid for pid in tree if _ppid(pid) == (self.process.pid if self.process else 0)]
        sentinels = [pid for pid in tree if _ppid(pid) in main]
        return sorted(set(tree) - set(main) - set(sentinels))

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                for pids in self.children().values():
                    for pid in pids:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait()


def _ppid(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def rss_kib(pids: list[int]) -> int:
    """Resident memory (VmRSS) of the given processes, summed."""
    total = 0
    for pid in pids:
        try:
            for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def signed_in_client(username: str, role: str = "admin") -> Any:
    """A Django test client signed in as a console user the way a person signs in: the login
    form with a password, then the second step with a code from the user's authenticator
    (TOTP). The benchmarks run the production settings, REQUIRE_MFA included; a client that
    skipped the second step (`force_login`) would be sent to it (302) on every page.
    Needs Django set up (setup_django)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client
    from django.urls import reverse
    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    password = secrets.token_urlsafe(24)
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_password(password)
    user.is_active = True
    user.save()
    user.groups.add(Group.objects.get(name=role))
    TOTPDevice.objects.filter(user=user).delete()
    device = TOTPDevice.objects.create(user=user, name="bench authenticator", confirmed=True)
    client = Client()
    answer = client.post(reverse("login"), {"username": username, "password": password})
    if answer.status_code != 302:
        raise RuntimeError(f"sign-in refused ({answer.status_code})")
    code = totp(device.bin_key, device.step, device.t0, device.digits, device.drift)
    answer = client.post(reverse("second_factor"), {"token": f"{code:0{device.digits}d}"})
    if answer.status_code != 302 or client.get(reverse("console:dashboard")).status_code != 200:
        raise RuntimeError(f"second step refused ({answer.status_code})")
    return client
