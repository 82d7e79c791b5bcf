"""A fleet-size tenant: 10,000 monitored users (mailboxes and chats) on two worker nodes.

    python bench/scale/run.py [--quick] [--users N] [--phases setup,steady,storm,console]

The Graph emulator is seeded with N drivers (`--extra-users`: a mailbox and a 1:1 chat each,
the demo's 22 people beside them) and the portal monitors all N on PostgreSQL
(BENCH_DATABASE_URL, default …/fleet_scale_bench, dropped and recreated), as a deployment runs
it: gunicorn (2 workers), two main-queue `qcluster` nodes and the events queue's on a Redis
broker (BENCH_REDIS_URL, default redis://127.0.0.1:6379/7, flushed first), and two inbox
drains. The monitored users are inserted with their Graph ids, as a directory import would
leave them. TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD is N/2 (the default's proportion at
10,000), so chats are watched with one tenant-wide subscription in both sizes.

Phases, each with its targets (exit 1 when one is missed):

* setup — a maintenance run (and the continuations it queues) until every subscription exists
  (N mailboxes + the tenant-wide chats). The minimum Graph's documented budget allows: 500
  creations per 20 s per app and tenant ("Microsoft Graph service-specific throttling
  limits"), so the k-th creation no earlier than 20 s after the (k-500)-th: floor((n-1)/500) x
  20 s for n creations. Targets: within 1.2x that minimum, none failed, no request inside a
  Retry-After window (the emulator enforces the budget; its request log gives every 429 and
  the requests after it).
* steady — a simulated day on the soak's clocks (the emulator's via its control API, the
  portal's via SIMULATED_CLOCK_FILE) with SUBSCRIPTION_RENEW_FRACTION 0.1, so that every
  subscription comes due within the day; the bench queues the maintenance runs a schedule
  would (it runs on real time). Targets: every subscription renewed before it expired (the
  emulator expired none; each was renewed), no mailbox's request budget exceeded (no 429 on
  a mailbox in the emulator's log), RSS of every process flat (< +10 % from the first quarter
  to the end). Interval delta syncs are the one schedule left out (SYNC_INTERVAL_MINUTES is
  Graph time: at 300x it would ask for a round every second); their cost is measured apart
  by bench/delta_sync, and the storm below is the sync load.
* storm — 1,000 new items per second for 60 s across the tenant (60 % mail, 40 % chat
  messages; the emulator creates them, `POST /_emulator/traffic`). Targets: every
  notification the emulator delivered is in the inbox and processed once, every item is
  synced for every monitored user it concerns, and the backlog (inbox, sync jobs) drained
  within the bound derived and printed before the storm (see storm_bound()).
* console — the console's list pages and the dashboard at this size, signed in with a
  password and an authenticator code (bench/console_scale's pages and measure). Target:
  p95 < 300 ms per page.

Prints the CPU seconds of the emulator, the portal's processes and the PostgreSQL server per
phase, so the figures say whose limit they show. Ports: 18260 (web), 18261 (emulator).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    ROOT,
    bench_env,
    fresh_database,
    load,
    rss_kib,
    setup_django,
    signed_in_client,
    stop,
    wait_for,
)

GRAPH_OPS_LIMIT = 500  # creations, renewals, deletions per window per app and tenant
GRAPH_OPS_WINDOW = 20.0
TICKS = os.sysconf("SC_CLK_TCK")
PHASES = ("setup", "steady", "storm", "console")


class Emulator:
    """The Graph emulator, seeded with `users` extra drivers, local receivers allowed."""

    def __init__(self, port: int, state_dir: Path, users: int) -> None:
        self.port, self.state_dir, self.users = port, state_dir, users
        self.process: subprocess.Popen | None = None
        self.token = ""
        import requests

        self.session = requests.Session()
        self.session.trust_env = False

    def start(self) -> dict[str, Any]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tenant_file = self.state_dir / "demo-tenant.json"
        tenant_file.unlink(missing_ok=True)
        config = {
            "subscriptions": {
                "allow_http_notification_urls": True,
                "allow_local_notification_urls": True,
            },
            # The request log must hold what happens between two of our reads of it.
            "logs": {"request_log_size": 200_000, "delivery_log_size": 50_000},
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "integrations.graph_emulator",
                "--port",
                str(self.port),
                "--state-dir",
                str(self.state_dir),
                "--extra-users",
                str(self.users),
                "--config",
                json.dumps(config),
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(lambda: tenant_file.exists() and tenant_file.stat().st_size > 0, 300, 0.2)
        tenant = json.loads(tenant_file.read_text())
        self.token = tenant["control_token"]
        self.session.headers["Authorization"] = f"Bearer {self.token}"
        self.session.verify = str(self.state_dir / "ca.pem")
        return tenant

    def control(self, method: str, path: str, body: object = None, **params: Any) -> Any:
        response = self.session.request(
            method,
            f"https://127.0.0.1:{self.port}/_emulator/{path}",
            json=body,
            params=params or None,
            timeout=120,
        )
        response.raise_for_status()
        return response.json()


class Processes:
    """The portal's processes, by role; CPU seconds and RSS read from /proc."""

    def __init__(self, env: dict[str, str], web_port: int, log_dir: Path) -> None:
        self.env, self.web_port, self.log_dir = env, web_port, log_dir
        self.running: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        manage = [sys.executable, str(ROOT / "manage.py")]
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "web": (
                [
                    gunicorn,
                    "portal.wsgi:application",
                    "--bind",
                    f"127.0.0.1:{self.web_port}",
                    "--workers",
                    "2",
                    "--log-level",
                    "error",
                ],
                {},
            ),
            "node-a": ([*manage, "qcluster"], {"Q_WORKERS": "2"}),
            "node-b": ([*manage, "qcluster"], {"Q_WORKERS": "2"}),
            "events": ([*manage, "qcluster"], {"WORKER_QUEUE": "events", "Q_WORKERS": "1"}),
            "drain-a": ([*manage, "drain_inbox"], {}),
            "drain-b": ([*manage, "drain_inbox"], {}),
        }
        for name, (command, extra) in commands.items():
            log = (self.log_dir / f"{name}.log").open("ab")
            self.running[name] = subprocess.Popen(
                command,
                env={**self.env, **extra},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}); see {self.log_dir}")

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running.values():
            stop(process)


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, and of their children that exited and were waited
    for (cutime + cstime: PostgreSQL's backends end with their connections)."""
    total = 0
    for pid in pids:
        try:
            fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / TICKS


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Meter:
    """CPU seconds per party between two marks (children that exited are not counted)."""

    def __init__(self, emulator: Emulator, portal: Processes) -> None:
        self.emulator, self.portal = emulator, portal

    def groups(self) -> dict[str, list[int]]:
        assert self.emulator.process is not None
        out = {"emulator": tree(self.emulator.process.pid)}
        for name, process in self.portal.running.items():
            out[name] = tree(process.pid)
        out["postgresql (whole server)"] = postgres_pids()
        return out

    def read(self) -> dict[str, float]:
        return {name: cpu_seconds(pids) for name, pids in self.groups().items()}

    def rss(self) -> dict[str, int]:
        return {name: rss_kib(pids) for name, pids in self.groups().items()}

    @staticmethod
    def split(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
        used = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
        portal = sum(v for k, v in used.items() if k not in ("emulator",) and "postgres" not in k)
        parts = [f"emulator {used['emulator']:.0f} s", f"portal {portal:.0f} s"]
        parts.append(f"PostgreSQL {used['postgresql (whole server)']:.0f} s")
        detail = ", ".join(
            f"{k} {v:.0f}" for k, v in used.items() if k != "emulator" and "postgres" not in k
        )
        total = sum(used.values())
        return (
            f"CPU over {seconds:.0f} s wall ({total / max(seconds, 0.001):.2f} cores busy): "
            + ", ".join(parts)
            + f" (portal: {detail})"
        )


class RequestLog:
    """The emulator's request log, read incrementally: 429s on the subscriptions API and on
    mailboxes, requests inside a Retry-After window, and every write to /subscriptions."""

    # A request already past its window check when the 429 came back may still arrive a moment
    # later (tests/integrations/microsoft/test_subscription_pacing.py); later ones count.
    IN_FLIGHT_SECONDS = 1.5

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.seq = 0
        self.writes: list[dict[str, Any]] = []
        self.throttled: list[dict[str, Any]] = []
        self.windows: list[tuple[str, float, float]] = []  # (key, from, until) monotonic
        self.inside: list[dict[str, Any]] = []
        self.per_mailbox: Counter[str] = Counter()

    @staticmethod
    def key(entry: dict[str, Any]) -> str:
        if "/subscriptions" in entry["path"]:
            return "subscriptions"
        return f"mailbox:{entry.get('mailbox') or ''}"

    def poll(self) -> None:
        answer = self.emulator.control("GET", "requests", since=self.seq)
        entries = answer["value"]
        if entries and entries[0]["seq"] > self.seq + 1 and self.seq:
            raise RuntimeError("the emulator's request log wrapped between two reads")
        self.seq = answer["last_seq"]
        for entry in entries:
            key = self.key(entry)
            if entry.get("mailbox"):
                self.per_mailbox[entry["mailbox"]] += 1
            for window_key, start, until in self.windows:
                if (
                    window_key == key
                    and start + self.IN_FLIGHT_SECONDS < entry["monotonic"] < until
                ):
                    self.inside.append(entry)
            if entry["status"] == 429:
                self.throttled.append(entry)
                after = float(entry.get("retry_after") or 1)
                self.windows.append((key, entry["monotonic"], entry["monotonic"] + after))
            if key == "subscriptions" and entry["method"] in ("POST", "PATCH", "DELETE"):
                self.writes.append(entry)

    def mailbox_429s(self) -> int:
        return sum(1 for e in self.throttled if e.get("mailbox"))


def minimum_seconds(creations: int) -> float:
    """The least time Graph's budget allows for `creations` writes: the k-th no earlier than
    a window after the (k-500)-th."""
    return ((creations - 1) // GRAPH_OPS_LIMIT) * GRAPH_OPS_WINDOW if creations else 0.0


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ok = True
        self.lines: list[str] = []

    def verdict(self, label: str, figure: str, target: str, met: bool) -> None:
        self.ok &= met
        line = f"{label}: {figure} (target {target}) -> {'met' if met else 'MISSED'}"
        self.lines.append(line)
        print("  " + line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 users, under 10 minutes")
    parser.add_argument("--users", type=int, default=None, help="monitored users (10,000)")
    parser.add_argument(
        "--phases",
        default=None,
        help="default: all for --quick; setup,storm,console for 10,000 (see steady_speed)",
    )
    parser.add_argument("--storm-rate", type=float, default=1000.0)
    parser.add_argument("--storm-seconds", type=float, default=60.0)
    parser.add_argument("--sim-hours", type=float, default=24.0)
    parser.add_argument("--speed", type=float, default=None, help="simulated s per real s")
    parser.add_argument("--web-port", type=int, default=18260)
    parser.add_argument("--emulator-port", type=int, default=18261)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    users = args.users or (1000 if args.quick else 10_000)
    default_phases = PHASES if users <= 2000 else ("setup", "storm", "console")
    phases = [p for p in (args.phases or ",".join(default_phases)).split(",") if p]
    speed = args.speed or steady_speed(users)
    run = Run(args)

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    clock_file = work / "clock-offset"
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
    env = bench_env(
        DATABASE_URL=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fleet_scale_bench"
        ),
        REDIS_URL=redis_url,
        SIMULATED_CLOCK_FILE=str(clock_file),
        SUBSCRIPTION_RENEW_FRACTION="0.1",
        TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD=str(max(1, users // 2)),
        SYNC_SPREAD_SECONDS="0",
        ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{args.web_port}",
        LOG_LEVEL="WARNING",
    )
    clock_file.write_text("0")
    print(f"load before: {load()}")
    print(f"{users:,} users; phases {', '.join(phases)}; work dir {work}")
    emulator = Emulator(args.emulator_port, work / "emulator", users)
    started = time.monotonic()
    tenant = emulator.start()
    print(f"emulator seeded with {users:,} drivers in {time.monotonic() - started:.1f} s")
    env.update(
        MICROSOFT_TENANT_ID=tenant["tenant_id"],
        MICROSOFT_CLIENT_ID=tenant["client_id"],
        MICROSOFT_CLIENT_SECRET=tenant["client_secret"],
        MICROSOFT_AUTHORITY_HOST=tenant["authority_host"],
        MICROSOFT_GRAPH_URL=tenant["graph_url"],
        MICROSOFT_CA_BUNDLE=tenant["ca_bundle"],
        MICROSOFT_ALLOW_EMULATOR="true",
    )
    subprocess.run(["redis-cli", "-u", redis_url, "FLUSHDB"], check=True, stdout=subprocess.DEVNULL)
    fresh_database(env)
    setup_django(env)
    portal = Processes(env, args.web_port, work)
    meter = Meter(emulator, portal)
    try:
        drivers = seed_monitored_users(emulator)
        disable_interval_syncs()
        portal.start()
        wait_for(lambda: web_up(args.web_port, portal), 120, 0.5)
        log = RequestLog(emulator)
        log.poll()
        if "setup" in phases:
            phase_setup(run, emulator, meter, log, users, settle=phases[-1] != "setup")
        if "steady" in phases:
            phase_steady(run, emulator, meter, log, portal, clock_file, speed, args.sim_hours)
        if "storm" in phases:
            phase_storm(run, emulator, meter, log, portal, drivers, args)
        if "console" in phases:
            phase_console(run, meter)
        log.poll()
        run.verdict(
            "mailbox budgets over the whole run",
            f"{log.mailbox_429s()} mailbox 429s; most requests to one mailbox "
            f"{max(log.per_mailbox.values(), default=0)}",
            "0 (Graph: 10,000 per 10 min and 4 at once per mailbox)",
            log.mailbox_429s() == 0,
        )
    finally:
        portal.stop()
        if emulator.process is not None:
            stop(emulator.process)
        if not args.keep and run.ok:
            shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - started
    if args.quick:
        run.verdict("--quick run time", f"{total / 60:.1f} min", "< 10 min", total < 600)
    else:
        print(f"run time: {total / 60:.1f} min")
    print(f"\nload after: {load()}")
    print("summary:")
    for line in run.lines:
        print(f"  {line}")
    print("scale: " + ("all targets met" if run.ok else "TARGETS MISSED"))
    return 0 if run.ok else 1


def steady_speed(users: int) -> float:
    """How fast simulated time may run: renewing every mailbox's subscription takes
    users / 24 real seconds at Graph's budget (480 per 20 s), and a round comes due every
    0.1 x 10,000 simulated minutes (SUBSCRIPTION_RENEW_FRACTION 0.1): the clock may not bring
    the next round before this one is done. Half of that, at most 600x. At 10,000 users that
    is 72x, and a simulated day takes 20 minutes: the full run leaves this phase out by
    default (`--phases setup,steady` runs it; the renewals use the same budget the set-up
    measures)."""
    round_seconds = users / (480 / 20)
    return min(600.0, 0.5 * 0.1 * 10_000 * 60 / max(round_seconds, 1.0))


def web_up(port: int, portal: Processes) -> bool:
    import urllib.request

    portal.check()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False


def seed_monitored_users(emulator: Emulator) -> list[str]:
    """Monitored users for every driver, with their Graph ids (as a directory import leaves
    them). Returns the drivers' Graph ids."""
    from integrations.microsoft.models import MonitoredUser

    tenant = emulator.control("GET", "tenant")
    drivers = [u for u in tenant["users"] if u["userPrincipalName"].startswith("driver")]
    MonitoredUser.objects.bulk_create(
        [
            MonitoredUser(
                identifier=u["userPrincipalName"],
                graph_id=u["id"],
                upn=u["userPrincipalName"],
                display_name=u["displayName"],
                created_by="bench",
            )
            for u in drivers
        ],
        batch_size=2000,
    )
    return [u["id"] for u in drivers]


def disable_interval_syncs() -> None:
    """The interval sync schedule works in Graph time (see the module docstring)."""
    from django_q.models import Schedule

    Schedule.objects.filter(func__endswith="enqueue_interval_syncs").delete()


# --------------------------------------------------------------------------- set-up


def phase_setup(
    run: Run, emulator: Emulator, meter: Meter, log: RequestLog, users: int, *, settle: bool
) -> None:
    from integrations.microsoft import subscriptions
    from integrations.microsoft.models import Subscription
    from portal.jobs.models import Job

    expected = users + 1  # every mailbox, and the tenant-wide chats
    print(f"\n[setup] {expected:,} subscriptions to create", flush=True)
    cpu = meter.read()
    started = time.monotonic()
    subscriptions.continue_maintenance()
    next_report = started + 30

    def done() -> bool:
        nonlocal next_report
        log.poll()
        active = Subscription.objects.filter(state="active").count()
        if time.monotonic() > next_report:
            next_report += 30
            print(f"  {time.monotonic() - started:5.0f} s: {active:,} active", flush=True)
        return active >= expected

    wait_for(done, 3600, 1.0)
    elapsed = time.monotonic() - started
    creations = [w for w in log.writes if w["method"] == "POST"]
    first = min((w["monotonic"] for w in creations), default=0.0)
    last = max((w["monotonic"] for w in creations), default=0.0)
    in_graph = len(emulator.control("GET", "subscriptions")["value"])
    failed = Subscription.objects.filter(state="failed").count()
    minimum = minimum_seconds(expected)
    print(
        f"  every subscription active after {elapsed:.1f} s (first to last creation in Graph "
        f"{last - first:.1f} s); {len(creations):,} creations sent, {in_graph:,} in Graph"
    )
    print("  " + Meter.split(cpu, meter.read(), elapsed))
    if minimum:
        run.verdict(
            "set-up time",
            f"{elapsed:.1f} s = {elapsed / minimum:.2f}x the minimum {minimum:.0f} s "
            f"({expected:,} creations at {GRAPH_OPS_LIMIT} per {GRAPH_OPS_WINDOW:.0f} s)",
            "<= 1.2x",
            elapsed <= 1.2 * minimum,
        )
    else:
        print(f"  ({expected} creations fit in one window: no minimum to compare with)")
    run.verdict(
        "set-up failures",
        f"{failed} failed, {in_graph - expected:+d} in Graph against expected",
        "0 failed, all in Graph",
        failed == 0 and in_graph == expected,
    )
    sub_429 = [e for e in log.throttled if "/subscriptions" in e["path"]]
    inside = [e for e in log.inside if "/subscriptions" in e["path"]]
    run.verdict(
        "set-up Retry-After",
        f"{len(sub_429)} 429s on /subscriptions, {len(inside)} requests inside a window",
        "0 inside a window",
        not inside,
    )
    if not settle:
        return
    # The baseline syncs the creations queued, before the next phase measures anything.
    wait_for(lambda: not Job.objects.filter(status__in=["pending", "running"]).exists(), 1800, 2)
    syncs = Job.objects.filter(job_type="graph.sync_delta", status="succeeded")
    span = syncs.values_list("started_at", "finished_at")
    if span:
        starts = [a for a, _ in span if a]
        ends = [b for _, b in span if b]
        seconds = (max(ends) - min(starts)).total_seconds()
        print(
            f"  baseline delta syncs: {len(span):,} in {seconds:.1f} s "
            f"({len(span) / max(seconds, 0.001):.0f} jobs/s on the two nodes)"
        )


# --------------------------------------------------------------------------- steady state


def phase_steady(
    run: Run,
    emulator: Emulator,
    meter: Meter,
    log: RequestLog,
    portal: Processes,
    clock_file: Path,
    speed: float,
    sim_hours: float,
) -> None:
    from integrations.microsoft import subscriptions
    from integrations.microsoft.models import Subscription
    from portal.events.models import Event

    print(f"\n[steady] {sim_hours:g} simulated hours at {speed:.0f}x", flush=True)
    subs_before = {
        s.graph_id: s.lifetime_started_at
        for s in Subscription.objects.filter(state="active").only("graph_id", "lifetime_started_at")
    }
    delivery_seq = 0
    expired = 0
    lapsed_before = Event.objects.filter(type="subscription.lapsed").count()
    cpu = meter.read()
    real_start = time.time()
    offset_start = float(clock_file.read_text() or 0)
    samples: list[dict[str, int]] = []
    next_maintain = next_sample = 0.0
    sim = 0.0

    def push_clock() -> float:
        sim_elapsed = (time.time() - real_start) * speed
        offset = offset_start + sim_elapsed - (time.time() - real_start)
        tmp = clock_file.with_suffix(".tmp")
        tmp.write_text(f"{offset:.3f}")
        os.replace(tmp, clock_file)
        emulator.control("POST", "clock", {"offset_seconds": offset})
        return sim_elapsed

    def renewed() -> int:
        now = {
            s.graph_id: s.lifetime_started_at
            for s in Subscription.objects.filter(state="active").only(
                "graph_id", "lifetime_started_at"
            )
        }
        return sum(1 for gid, at in subs_before.items() if gid in now and now[gid] != at)

    while True:
        portal.check()
        sim = push_clock()
        if sim >= next_maintain:
            subscriptions.continue_maintenance()  # the schedule's run, in Graph time
            next_maintain = sim + 20 * speed  # every 20 real seconds
        log.poll()
        deliveries = emulator.control("GET", "deliveries", since=delivery_seq)
        for entry in deliveries["value"]:
            delivery_seq = max(delivery_seq, entry["seq"])
            expired += entry["event"] == "expired"
        if sim >= next_sample:
            samples.append(meter.rss())
            next_sample = sim + 600 * speed / 60  # every 10 real seconds
        count = renewed()
        if sim >= sim_hours * 3600 and count >= len(subs_before):
            break
        if sim >= 3 * sim_hours * 3600:
            break
        time.sleep(2)
    elapsed = time.time() - real_start
    count = renewed()
    lapsed = Event.objects.filter(type="subscription.lapsed").count() - lapsed_before
    print(
        f"  {sim / 3600:.1f} simulated hours in {elapsed:.0f} s; {count:,} of "
        f"{len(subs_before):,} subscriptions renewed"
    )
    print("  " + Meter.split(cpu, meter.read(), elapsed))
    run.verdict(
        "renewals",
        f"{count:,} of {len(subs_before):,} renewed, {expired} expired in Graph, {lapsed} lapsed",
        "all renewed, 0 expired",
        count == len(subs_before) and expired == 0 and lapsed == 0,
    )
    quarter = samples[max(1, len(samples) // 4)] if len(samples) > 4 else samples[0]
    last = samples[-1]
    worst = max(
        ((last[name] - quarter[name]) / quarter[name], name)
        for name in last
        if quarter.get(name) and "postgres" not in name
    )
    for name in last:
        if "postgres" not in name:
            print(f"    RSS {name}: {quarter[name] / 1024:.0f} -> {last[name] / 1024:.0f} MiB")
    run.verdict(
        "memory",
        f"largest RSS growth {worst[0]:+.1%} ({worst[1]})",
        "< +10 % from the first quarter",
        worst[0] < 0.10,
    )
    # Back to real speed: the clocks stay where the day left them.
    stopped = float(clock_file.read_text())
    emulator.control("POST", "clock", {"offset_seconds": stopped})


# --------------------------------------------------------------------------- storm


def storm_bound(
    items: int, users: int, seconds: float, sync_rate: float, drain_rate: float
) -> float:
    """Seconds after the storm's end by which the backlog must be gone, from the rates this
    run measured in a 5-second warm-up burst at the storm's rate.

    The inbox drains at drain_rate rows/s while the storm lasts, so what it has not processed
    by the end takes max(0, items / drain_rate - seconds) more. A delta job absorbs every
    notification of its user and kind that arrives before it runs (sync.request_delta), so
    then at most one job per user and kind waits: min(items, 2 x users) / sync_rate. Half as
    much again, and 15 s, for the emulator's delivery retries and the workers' polls."""
    inbox = max(0.0, items / drain_rate - seconds)
    jobs = min(items, 2 * users) / sync_rate
    return 1.5 * (inbox + jobs) + 15


def warm_up(emulator: Emulator, drivers: list[str], rate: float) -> tuple[float, float]:
    """A 5-second burst at the storm's rate, drained: (inbox rows processed per second, sync
    jobs finished per second), each over its own busy span."""
    from django.db.models import Max, Min

    from integrations.microsoft.models import NotificationInbox
    from portal.jobs.models import Job

    rows_before = NotificationInbox.objects.aggregate(m=Max("id"))["m"] or 0
    jobs_before = Job.objects.aggregate(m=Max("id"))["m"] or 0
    emulator.control("POST", "traffic", {"users": drivers, "rate": rate, "seconds": 5})
    wait_for(lambda: not emulator.control("GET", "traffic", since=10**9)["running"], 60, 0.5)

    def settled() -> bool:
        busy = NotificationInbox.objects.filter(processed_at__isnull=True).exists()
        return (
            not busy
            and not Job.objects.filter(status__in=["pending", "running", "retrying"]).exists()
        )

    wait_for(settled, 900, 1.0)
    rows = NotificationInbox.objects.filter(id__gt=rows_before)
    span = rows.aggregate(a=Min("received_at"), b=Max("processed_at"))
    drain_rate = rows.count() / max(0.001, (span["b"] - span["a"]).total_seconds())
    jobs = Job.objects.filter(id__gt=jobs_before, job_type="graph.sync_delta")
    span = jobs.aggregate(a=Min("started_at"), b=Max("finished_at"))
    sync_rate = jobs.count() / max(0.001, (span["b"] - span["a"]).total_seconds())
    return drain_rate, sync_rate


def phase_storm(
    run: Run,
    emulator: Emulator,
    meter: Meter,
    log: RequestLog,
    portal: Processes,
    drivers: list[str],
    args: argparse.Namespace,
) -> None:
    from integrations.microsoft.models import NotificationInbox, SyncedItem
    from portal.jobs.models import Job

    planned = int(args.storm_rate * args.storm_seconds)
    print(
        f"\n[storm] {args.storm_rate:.0f} items/s for {args.storm_seconds:.0f} s across "
        f"{len(drivers):,} users",
        flush=True,
    )
    drain_rate, sync_rate = warm_up(emulator, drivers, args.storm_rate)
    bound = storm_bound(planned, len(drivers), args.storm_seconds, sync_rate, drain_rate)
    waiting = min(planned, 2 * len(drivers))
    print(
        f"  warm-up (5 s at that rate): the drains processed {drain_rate:.0f} inbox rows/s, "
        f"the nodes finished {sync_rate:.0f} sync jobs/s\n"
        f"  backlog bound after the storm: 1.5 x (max(0, {planned:,} / {drain_rate:.0f} - "
        f"{args.storm_seconds:.0f}) + {waiting:,} / {sync_rate:.0f}) + 15 = {bound:.0f} s",
        flush=True,
    )
    inbox_before = (
        NotificationInbox.objects.order_by("-id").values_list("id", flat=True).first() or 0
    )
    seq = max((e["seq"] for e in emulator.control("GET", "deliveries")["value"]), default=0)
    cpu = meter.read()
    started = time.monotonic()
    emulator.control(
        "POST",
        "traffic",
        {"users": drivers, "rate": args.storm_rate, "seconds": args.storm_seconds},
    )
    delivered: list[dict[str, Any]] = []
    depth: list[tuple[float, int, int]] = []

    def poll_deliveries() -> int:
        nonlocal seq
        answer = emulator.control("GET", "deliveries", since=seq)
        for entry in answer["value"]:
            seq = max(seq, entry["seq"])
            if entry["event"] == "attempt" and entry["ok"]:
                delivered.extend(i for i in entry["items"] if "lifecycleEvent" not in i)
        return int(answer["pending"])

    progress: dict[str, Any] = {"running": True}
    while progress["running"]:
        time.sleep(2)
        portal.check()
        progress = emulator.control("GET", "traffic", since=10**9)
        poll_deliveries()
        log.poll()
        depth.append(
            (
                time.monotonic() - started,
                NotificationInbox.objects.filter(processed_at__isnull=True).count(),
                Job.objects.filter(status__in=["pending", "running", "retrying"]).count(),
            )
        )
    storm_end = time.monotonic()
    created = progress["created"]
    actual_rate = created / max(0.001, (progress["finished"] or 0) - progress["started"])
    run.verdict(
        "storm: rate",
        f"{created:,} items created, {actual_rate:.0f}/s achieved by the emulator",
        f">= 95 % of {args.storm_rate:.0f}/s",
        created >= planned and actual_rate >= 0.95 * args.storm_rate,
    )

    def settled() -> bool:
        pending = poll_deliveries()
        inbox = NotificationInbox.objects.filter(processed_at__isnull=True).count()
        jobs = Job.objects.filter(status__in=["pending", "running", "retrying"]).count()
        depth.append((time.monotonic() - started, inbox, jobs))
        return pending == 0 and inbox == 0 and jobs == 0

    try:
        wait_for(settled, max(600.0, 3 * bound), 1.0)
    except TimeoutError:
        print("  the backlog did not drain in time")
    drained = time.monotonic() - storm_end
    print("  " + Meter.split(cpu, meter.read(), time.monotonic() - started))
    peak = max(depth, key=lambda d: d[1] + d[2])
    print(f"  peak backlog: {peak[1]:,} inbox rows, {peak[2]:,} jobs at {peak[0]:.0f} s")
    items = emulator.control("GET", "traffic")["items"]
    # Nothing lost: every delivered notification is in the inbox (by resource id), processed.
    rows = {
        (sub, resource): (status, processed)
        for sub, resource, status, processed in NotificationInbox.objects.filter(
            id__gt=inbox_before
        ).values_list("subscription_graph_id", "resource_id", "status", "processed_at")
    }
    keys = {(i["subscriptionId"], (i.get("resourceData") or {}).get("id", "")) for i in delivered}
    missing = [k for k in keys if k not in rows]
    unprocessed = [k for k in keys if k in rows and rows[k][1] is None]
    counted = Counter(
        NotificationInbox.objects.filter(id__gt=inbox_before).values_list(
            "subscription_graph_id", "resource_id"
        )
    )
    twice = [k for k, n in counted.items() if n > 1]
    run.verdict(
        "storm: notifications",
        f"{len(delivered):,} delivered ({len(keys):,} distinct), {len(missing)} not in the "
        f"inbox, {len(unprocessed)} unprocessed, {len(twice)} stored twice",
        "nothing lost, each processed once",
        not missing and not unprocessed and not twice and len(keys) >= created,
    )
    synced = set(
        SyncedItem.objects.filter(graph_id__in=[i["id"] for i in items]).values_list(
            "monitored_user__graph_id", "graph_id"
        )
    )
    pairs = [(u, i["id"]) for i in items for u in i["users"]]
    unsynced = [p for p in pairs if p not in synced]
    run.verdict(
        "storm: synced",
        f"{len(pairs) - len(unsynced):,} of {len(pairs):,} (user, item) pairs synced",
        "all",
        not unsynced,
    )
    run.verdict(
        "storm: backlog drained",
        f"{drained:.0f} s after the storm's end",
        f"<= {bound:.0f} s (derived above)",
        drained <= bound,
    )


# --------------------------------------------------------------------------- console


def phase_console(run: Run, meter: Meter) -> None:
    from bench.console_scale.run import console_pages, measure

    print("\n[console] list pages and the dashboard at this size", flush=True)
    client = signed_in_client("bench-scale-admin", "admin")
    worst, counted = measure(client, console_pages(), 20 if not run.args.quick else 10)
    run.verdict(
        "console p95",
        f"worst {worst:.0f} ms" + (f"; {len(counted)} exact COUNT(*)" if counted else ""),
        "< 300 ms per page, no COUNT(*) over a big table",
        worst < 300 and not counted,
    )


if __name__ == "__main__":
    sys.exit(main())
