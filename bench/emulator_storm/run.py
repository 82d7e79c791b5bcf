"""The Graph emulator alone under the scale bench's storm: what it costs per item.

    python bench/emulator_storm/run.py [--users 10000] [--rate 1000] [--seconds 20]
           [--delta-rate 200] [--receiver-delay-ms 0] [--burn N]
           [--emulator-root DIR] [--no-subscriptions] [--profile py-spy|none]

Starts the emulator as bench/scale does (`--extra-users N`, local receivers allowed; the
subscription budget off so that set-up takes seconds, nothing else changed), a receiver
process on 127.0.0.1 that answers every notification 202 (and echoes validation tokens), one
mail subscription per driver and one tenant-wide chat subscription (what the portal holds at
this size), then runs a traffic burst (`POST /_emulator/traffic`) while client threads make
delta GETs (the drivers' inbox and getAllMessages deltas, following next links and keeping
delta links, at --delta-rate requests/s) and poll the control API every 2 s as bench/scale
does. Prints the burst's achieved rate, the emulator's CPU seconds per 1,000 items, the
deliveries made, delta requests answered and the emulator's RSS and seeding time.

No PostgreSQL, Redis or portal: the figures are the emulator's own cost. Port 18361
(emulator), 18362 (receiver).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import ROOT, wait_for

TICKS = os.sysconf("SC_CLK_TCK")
EMULATOR_PORT = 18361
RECEIVER_PORT = 18362


# --------------------------------------------------------------------------- receiver


class _Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    received = 0
    posts = 0
    delay = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        token = parse_qs(urlsplit(self.path).query).get("validationToken")
        if token:
            out = token[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
        else:
            out = b""
            time.sleep(_Receiver.delay)
            _Receiver.posts += 1
            _Receiver.received += body.count(b'"subscriptionId"')
            self.send_response(202)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self) -> None:
        out = json.dumps({"posts": _Receiver.posts, "received": _Receiver.received}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def receiver_main(port: int, delay_ms: float) -> None:
    _Receiver.delay = delay_ms / 1000
    server = ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
    server.daemon_threads = True
    server.serve_forever()


# --------------------------------------------------------------------------- helpers


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Client:
    def __init__(self, tenant: dict[str, Any], ca: str) -> None:
        import requests

        self.tenant = tenant
        self.local = threading.local()
        self.ca = ca
        self.requests = requests
        s = self.session()
        resp = s.post(
            f"{tenant['authority']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": tenant["client_id"],
                "client_secret": tenant["client_secret"],
                "scope": "https://graph.microsoft.com/.default",
            },
            timeout=30,
        )
        resp.raise_for_status()
        self.token = resp.json()["access_token"]

    def session(self) -> Any:
        s = getattr(self.local, "s", None)
        if s is None:
            s = self.requests.Session()
            s.trust_env = False
            s.verify = self.ca
            self.local.s = s
        return s

    def control(self, method: str, path: str, body: object = None, **params: Any) -> Any:
        resp = self.session().request(
            method,
            f"{self.tenant['control_url']}/{path}",
            json=body,
            params=params or None,
            headers={"Authorization": f"Bearer {self.tenant['control_token']}"},
            timeout=120,
        )
        resp.raise_for_status()
        return resp.json()

    def graph(self, method: str, url: str, body: object = None) -> Any:
        if not url.startswith("https://"):
            url = self.tenant["graph_url"] + url
        resp = self.session().request(
            method,
            url,
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {url}: {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else None


# --------------------------------------------------------------------------- load


class DeltaLoad(threading.Thread):
    """Delta rounds for random drivers at `rate` requests/s, as the portal's sync jobs make
    them: the stored delta link (or a first round), then its next links."""

    PATHS = {
        "mail": "/users/{id}/mailFolders/inbox/messages/delta",
        "chat": "/users/{id}/chats/getAllMessages/delta?$top=50",
    }

    def __init__(self, client: Client, users: list[str], rate: float, workers: int = 4) -> None:
        super().__init__(daemon=True)
        self.client, self.users, self.rate, self.workers = client, users, rate, workers
        self.links: dict[tuple[str, str], str] = {}
        self.stop = threading.Event()
        self.requests = 0
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.rng = random.Random(7)
        self.lock = threading.Lock()

    def _one(self, slots: threading.BoundedSemaphore) -> None:
        try:
            self.one()
        finally:
            slots.release()

    def one(self) -> None:
        with self.lock:
            user = self.rng.choice(self.users)
            kind = self.rng.choice(("mail", "mail", "chat"))
        url = self.links.get((user, kind)) or self.PATHS[kind].format(id=user)
        while url:
            started = time.monotonic()
            try:
                body = self.client.graph("GET", url)
            except Exception as exc:  # a benchmark counts failures
                self.errors.append(str(exc)[:200])
                return
            with self.lock:
                self.requests += 1
                self.latencies.append(time.monotonic() - started)
            url = body.get("@odata.nextLink")
            if not url:
                self.links[(user, kind)] = body["@odata.deltaLink"]

    def run(self) -> None:
        if self.rate <= 0:
            return
        start = time.monotonic()
        n = 0
        slots = threading.BoundedSemaphore(self.workers * 2)
        with ThreadPoolExecutor(self.workers) as pool:
            while not self.stop.is_set():
                due = start + n / self.rate
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                n += 1
                slots.acquire()  # two waiting per worker at most: no pile-up behind slow answers
                pool.submit(self._one, slots)


def create_subscriptions(client: Client, users: list[str], url: str) -> float:
    started = time.monotonic()
    expires = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def make(resource: str, endpoint: str) -> None:
        client.graph(
            "POST",
            "/subscriptions",
            {
                "changeType": "created,updated,deleted",
                "notificationUrl": f"{url}/api/webhooks/{endpoint}",
                "lifecycleNotificationUrl": f"{url}/api/webhooks/lifecycle",
                "resource": resource,
                "expirationDateTime": expires,
                "clientState": "bench-client-state",
            },
        )

    with ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(make, f"users/{u}/mailFolders('inbox')/messages", "mail") for u in users
        ]
        futures.append(pool.submit(make, "chats/getAllMessages", "teams"))
        for f in futures:
            f.result()
    return time.monotonic() - started


def profile_start(mode: str, pid: int, out: Path) -> subprocess.Popen | None:
    if mode != "py-spy":
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        # --gil: where the interpreter's time goes (idle threads would drown it otherwise)
        [spy, "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-r", "100", "--gil"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--delta-rate", type=float, default=200)
    parser.add_argument(
        "--receiver-delay-ms", type=float, default=0, help="the receiver's time per POST"
    )
    parser.add_argument(
        "--burn",
        type=int,
        default=0,
        help="processes spinning on the CPU meanwhile (the portal's workers, in bench/scale)",
    )
    parser.add_argument(
        "--emulator-root",
        default=str(ROOT),
        help="the checkout whose emulator runs (another commit's, to compare)",
    )
    parser.add_argument("--no-subscriptions", action="store_true")
    parser.add_argument("--profile", default="none", choices=("none", "py-spy"))
    parser.add_argument("--profile-out", default="/tmp/emulator-storm.txt")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="emulator-storm-"))
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receiver", str(args.receiver_delay_ms)],
        cwd=ROOT,
        start_new_session=True,
    )
    config = {
        "subscriptions": {
            "allow_http_notification_urls": True,
            "allow_local_notification_urls": True,
        },
        "throttling": {"subscription_ops_limit": 10**9},
        "logs": {"request_log_size": 200_000, "delivery_log_size": 50_000},
    }
    launched = time.monotonic()
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "integrations.graph_emulator",
            "--port",
            str(EMULATOR_PORT),
            "--state-dir",
            str(work),
            "--extra-users",
            str(args.users),
            "--config",
            json.dumps(config),
            "--log-level",
            "WARNING",
        ],
        cwd=args.emulator_root,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    spy: subprocess.Popen | None = None
    burners: list[subprocess.Popen] = []
    try:
        tenant_file = work / "demo-tenant.json"
        wait_for(lambda: tenant_file.exists() and tenant_file.stat().st_size > 0, 300, 0.05)
        seeded = time.monotonic() - launched
        tenant = json.loads(tenant_file.read_text())
        client = Client(tenant, str(work / "ca.pem"))
        info = client.control("GET", "tenant")
        drivers = [u["id"] for u in info["users"] if u["userPrincipalName"].startswith("driver")]
        print(
            f"emulator: {len(info['users']):,} users seeded, ready {seeded:.1f} s after launch, "
            f"RSS {rss_mib(emulator.pid):.0f} MiB",
            flush=True,
        )
        if not args.no_subscriptions:
            took = create_subscriptions(client, drivers, f"http://127.0.0.1:{RECEIVER_PORT}")
            print(f"subscriptions: {len(drivers) + 1:,} created in {took:.1f} s", flush=True)
        delta = DeltaLoad(client, drivers, args.delta_rate)
        delta.start()
        time.sleep(2)  # the delta load running before the burst starts
        burners = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
            for _ in range(args.burn)
        ]
        spy = profile_start(args.profile, emulator.pid, Path(args.profile_out))
        times0, wall0 = cpu_times(emulator.pid), time.monotonic()
        client.control(
            "POST", "traffic", {"users": drivers, "rate": args.rate, "seconds": args.seconds}
        )
        deliveries_seq = 0
        requests_seq = client.control("GET", "requests", since=10**12)["last_seq"]
        progress: dict[str, Any] = {"running": True}
        while progress["running"]:
            time.sleep(2)
            progress = client.control("GET", "traffic", since=10**9)
            answer = client.control("GET", "deliveries", since=deliveries_seq)
            deliveries_seq = max([deliveries_seq, *(e["seq"] for e in answer["value"])])
            requests_seq = client.control("GET", "requests", since=requests_seq)["last_seq"]
        times1, wall1 = cpu_times(emulator.pid), time.monotonic()
        for p in burners:
            p.kill()
            p.wait()
        user, system = times1[0] - times0[0], times1[1] - times0[1]
        delta.stop.set()
        delta.join()
        created = progress["created"]
        rate = created / max(0.001, progress["finished"] - progress["started"])
        pending = client.control("GET", "deliveries", since=10**12)["pending"]
        got = json.loads(client.requests.get(f"http://127.0.0.1:{RECEIVER_PORT}/", timeout=10).text)
        lat = sorted(delta.latencies) or [0.0]
        print(
            f"burst: {created:,} items in {progress['finished'] - progress['started']:.1f} s = "
            f"{rate:.0f}/s (target {args.rate:.0f}/s)\n"
            f"emulator CPU: {user + system:.1f} s ({user:.1f} user, {system:.1f} system) over "
            f"{wall1 - wall0:.1f} s wall = {(user + system) / max(1, created) * 1000:.2f} "
            "CPU-s per 1,000 items\n"
            f"delta: {delta.requests:,} GETs ({delta.requests / (wall1 - wall0):.0f}/s), "
            f"p50 {lat[len(lat) // 2] * 1000:.1f} ms, p95 {lat[int(len(lat) * 0.95)] * 1000:.1f}"
            f" ms, {len(delta.errors)} errors {delta.errors[:2]}\n"
            f"deliveries: {got['received']:,} notifications in {got['posts']:,} POSTs, "
            f"{pending:,} still pending\n"
            f"emulator RSS after: {rss_mib(emulator.pid):.0f} MiB",
            flush=True,
        )
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        for p in burners:
            p.kill()
        for p in (emulator, receiver, *burners):
            p.terminate()
            p.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--receiver"]:
        receiver_main(RECEIVER_PORT, float(sys.argv[2]))
    else:
        sys.exit(main())
