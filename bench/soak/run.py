"""A compressed soak: 24 simulated hours in about 20 minutes, with demo traffic and the day's
accidents, then checks that the portal kept itself alive.

    python bench/soak/run.py [--quick] [--hours 24] [--minutes 20] [--traffic 1.0]

The portal runs as `make run` starts it (`manage.py runportal`: emulator, web, worker and
whatever else runportal starts) on a private PostgreSQL instance (initdb under /tmp, port
18250: restarting it cuts nobody else's connections). The clocks:

* the emulator's clock is moved through its control API (POST /_emulator/clock) about once a
  second, so Graph's side (token and subscription expiry, message dates) lives on simulated
  time;
* the portal's Graph-facing clock follows through SIMULATED_CLOCK_FILE (portal/lib/clock.py):
  subscription lifetimes, renewal at half-life and the time slots of the two schedules that
  work in Graph's time. Leases, retries, timeouts and job delays stay on real time;
* django-q2 fires its schedules on real time, so this script triggers the two Graph-time
  schedules itself once per simulated interval, with the schedules' own entry points:
  `graph.webhooks.maintain` (subscriptions.enqueue_maintenance, every 10 simulated minutes)
  and `graph.sync.interval` (sync.enqueue_interval_syncs, every simulated minute: it queues
  a delta job per user once per SYNC_INTERVAL_MINUTES slot). The other schedules (release
  due jobs, watchdog, heartbeat, event fan-out, alerts, prunes) are about the processes and
  keep running on real time; the prunes delete nothing within a day anyway.

Traffic is the demo's (integrations/graph_emulator/demo.py: one message every 20 s, 60 % mail
to a monitored user, 40 % chat messages) in simulated time, created through the control API
so each one is known; the emulator's own generator is off. SUBSCRIPTION_RENEW_FRACTION is 0.1
so that renewals happen within the day (Graph's lifetimes are 70 h for chats and ~7 days for
mail; at the default half-life nothing would be renewed in 24 h). SYNC_SPREAD_SECONDS is 0:
the spread is in real seconds, longer than a simulated interval here.

Scripted accidents (at simulated hours, scaled with --hours): reauthorizationRequired,
a 429 storm on the delta endpoints, a `missed` lifecycle event, one delta-token expiry, a
worker process SIGKILLed mid-job (django-q2 replaces it), subscriptionRemoved, a PostgreSQL
restart, another reauthorizationRequired.

Checks afterwards (exit 1 when one fails): no subscription lapsed (the emulator never expired
one, and every watched resource always had a subscription except in the moments after the
scripted removal), every notification the emulator delivered is in the inbox and processed,
every lifecycle event delivered was handled, every message is synced, and the resident memory
of the web and worker processes grew less than 10 % after the first simulated hour. Writes
bench/soak/soak.png (memory and backlog over simulated time) and the samples as JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    Portal,
    PrivatePostgres,
    bench_env,
    fresh_database,
    load,
    rss_kib,
    setup_django,
)

DEMO_INTERVAL_S = 20.0  # integrations/graph_emulator/config.py demo.interval_s
MAIL_SHARE = 0.6  # integrations/graph_emulator/demo.py
HERE = Path(__file__).resolve().parent


def db(call: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Run a query, riding out a PostgreSQL restart (this process's connection dies too)."""
    from django.db import DatabaseError, close_old_connections, connection

    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except DatabaseError:
            if time.monotonic() > deadline:
                raise
            connection.close()
            close_old_connections()
            time.sleep(0.5)


class Clock:
    """Simulated time = start + speed x real elapsed, for the emulator and the portal; after
    `stop_compressing()` it runs on at real speed (a constant offset)."""

    def __init__(self, portal: Portal, offset_file: Path, speed: float) -> None:
        self.portal = portal
        self.offset_file = offset_file
        self.speed = speed
        self.real_start = time.time()
        self.stopped_at: float | None = None

    def sim_elapsed(self) -> float:
        """Simulated seconds since the start."""
        now = time.time()
        if self.stopped_at is None:
            return (now - self.real_start) * self.speed
        return (self.stopped_at - self.real_start) * self.speed + (now - self.stopped_at)

    def offset(self) -> float:
        return self.sim_elapsed() - (time.time() - self.real_start)

    def push(self) -> None:
        offset = self.offset()
        tmp = self.offset_file.with_suffix(".tmp")
        tmp.write_text(f"{offset:.3f}")
        os.replace(tmp, self.offset_file)  # portal/lib/clock.py reads it at call time
        self.portal.control("POST", "clock", {"offset_seconds": offset})

    def stop_compressing(self) -> None:
        self.stopped_at = time.time()
        self.push()


class Traffic(threading.Thread):
    """The demo's message mix at the demo's rate in simulated time."""

    def __init__(self, portal: Portal, clock: Clock, users: list[str], chats: list, scale: float):
        super().__init__(daemon=True)
        self.portal, self.clock, self.users, self.chats = portal, clock, users, chats
        self.rate = scale / DEMO_INTERVAL_S  # per simulated second
        self.rng = random.Random(16)
        self.pairs: list[tuple[str, str]] = []  # (user graph id, item id) expected synced
        self.errors = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        next_sim = self.rng.expovariate(self.rate)
        while not self.stopping.is_set():
            wait = (next_sim - self.clock.sim_elapsed()) / self.clock.speed
            if wait > 0:
                self.stopping.wait(min(wait, 0.5))
                continue
            next_sim += self.rng.expovariate(self.rate)
            try:
                if self.rng.random() < MAIL_SHARE:
                    to = self.rng.choice(self.users)
                    out = self.portal.control(
                        "POST", "mail", {"to": to, "subject": "soak", "body": "soak"}
                    )
                    self.pairs.append((to, out["id"]))
                else:
                    chat_id, members = self.rng.choice(self.chats)
                    out = self.portal.control(
                        "POST", "chat-message", {"chat_id": chat_id, "body": "soak"}
                    )
                    self.pairs += [(m, out["id"]) for m in members]
            except Exception:
                self.errors += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 simulated hours in 4 minutes")
    parser.add_argument("--hours", type=float, default=None, help="simulated hours (24)")
    parser.add_argument("--minutes", type=float, default=None, help="real minutes (20)")
    parser.add_argument("--traffic", type=float, default=1.0, help="multiple of the demo's rate")
    parser.add_argument("--web-port", type=int, default=18210)
    parser.add_argument("--emulator-port", type=int, default=18211)
    parser.add_argument("--pg-port", type=int, default=18250)
    parser.add_argument("--drain-timeout", type=float, default=600)
    parser.add_argument("--chart", default=str(HERE / "soak.png"))
    args = parser.parse_args()
    hours = args.hours or (6 if args.quick else 24)
    minutes = args.minutes or (4 if args.quick else 20)
    speed = hours * 3600 / (minutes * 60)

    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    os.chmod(work, 0o755)  # the private PostgreSQL runs as postgres
    postgres = PrivatePostgres(args.pg_port, work / "pg")
    database_url = postgres.start()
    offset_file = work / "clock-offset"
    env = bench_env(
        DATABASE_URL=database_url,
        SIMULATED_CLOCK_FILE=str(offset_file),
        SUBSCRIPTION_RENEW_FRACTION="0.1",
        SYNC_SPREAD_SECONDS="0",
        LOG_LEVEL="WARNING",
    )
    portal = Portal(env, args.web_port, args.emulator_port, work / "emulator")
    env = portal.prepare()
    print(f"load before: {load()}")
    print(f"{hours:g} simulated hours in {minutes:g} minutes: {speed:.0f}x; work dir {work}")
    fresh_database(env)
    setup_django(env)

    from integrations.microsoft import subscriptions, sync
    from integrations.microsoft.models import (
        LifecycleEvent,
        MonitoredUser,
        NotificationInbox,
        Subscription,
        SyncedItem,
        SyncState,
        WebhookRejection,
    )
    from portal.jobs.models import Job

    portal.start()
    samples: list[dict[str, Any]] = []
    marks: list[tuple[float, str]] = []
    findings: list[str] = []
    delivered: list[dict[str, Any]] = []
    expired_events: list[dict[str, Any]] = []
    gave_up: list[dict[str, Any]] = []
    failed_attempts: collections.Counter[int | str] = collections.Counter()
    renewals = reauthorizations = 0
    ok = True
    try:
        portal.wait_ready(subscriptions=10)
        portal.control("POST", "config", {"demo": {"interval_s": 1e9}})
        while db(lambda: SyncState.objects.filter(last_success_at__isnull=True).exists()):
            time.sleep(0.5)
        users = {u.graph_id: u for u in MonitoredUser.objects.filter(is_active=True)}
        tenant = portal.control("GET", "tenant")
        chats = [
            (c["id"], [m for m in c["members"] if m in users])
            for c in tenant["chats"]
            if any(m in users for m in c["members"])
        ]
        watched = set(
            Subscription.objects.filter(state="active").values_list("resource", flat=True)
        )
        baseline_items = SyncedItem.objects.filter(removed_at__isnull=True).count()
        subs_by_kind = {
            kind: list(
                Subscription.objects.filter(state="active", kind=kind)
                .order_by("monitored_user__identifier")
                .values_list("graph_id", flat=True)
            )
            for kind in ("messages", "chatMessages")
        }

        def live_sub(kind: str, n: int) -> str:
            """The current subscription of the n-th user's kind (it may have been replaced)."""
            original = subs_by_kind[kind][n]
            row = db(lambda: Subscription.objects.get(graph_id=original))
            while row.replaced_by_id:
                row = db(lambda row=row: Subscription.objects.get(pk=row.replaced_by_id))
            return row.graph_id

        removed_resource: dict[str, float] = {}  # resource -> simulated second removed

        def storm_on() -> str:
            rules = portal.control(
                "POST",
                "faults",
                {"method": "GET", "path": r"/delta", "kind": "429", "retry_after": 10},
            )
            storm_id = rules["faults"][0]["id"]
            threading.Timer(20.0, lambda: portal.control("DELETE", f"faults/{storm_id}")).start()
            return "429 on every delta GET for 20 s (Retry-After 10)"

        def kill_worker() -> str:
            """SIGKILL a django-q2 worker process, one running a job if there is one (not the
            qcluster process or its sentinel: losing those stops the cluster, and runportal
            with it)."""
            pool = portal.worker_processes()
            running = {
                int(w.rpartition(":")[2])
                for w in db(
                    lambda: list(
                        Job.objects.filter(status="running").values_list("worker", flat=True)
                    )
                )
                if ":" in w
            }
            victim = max(running & set(pool), default=None) or max(pool)
            os.kill(victim, signal.SIGKILL)
            return f"SIGKILL worker process {victim}" + (" (mid-job)" if victim in running else "")

        def remove_sub() -> str:
            graph_id = live_sub("chatMessages", 3)
            resource = db(lambda: Subscription.objects.get(graph_id=graph_id).resource)
            removed_resource[resource] = clock.sim_elapsed()
            portal.control("POST", f"subscriptions/{graph_id}/remove")
            return f"subscriptionRemoved for {graph_id}"

        def lifecycle(kind: str, n: int, event: str) -> Callable[[], str]:
            def fire() -> str:
                graph_id = live_sub(kind, n)
                portal.control("POST", "lifecycle", {"subscription_id": graph_id, "event": event})
                return f"{event} for {graph_id}"

            return fire

        def expire_delta() -> str:
            user = sorted(users)[2]
            out = portal.control("POST", "delta/expire", {"user": user})
            return f"delta tokens of {users[user]} expired ({out['expired']})"

        def restart_postgres() -> str:
            took = postgres.restart()
            return f"PostgreSQL restarted ({took:.1f} s)"

        scale = hours / 24
        script: list[tuple[float, str, Callable[[], str]]] = [
            (3.0, "reauthorizationRequired", lifecycle("messages", 0, "reauthorizationRequired")),
            (5.0, "429 storm", storm_on),
            (8.0, "missed", lifecycle("messages", 1, "missed")),
            (10.0, "delta token expiry", expire_delta),
            (12.0, "worker killed", kill_worker),
            (14.0, "subscriptionRemoved", remove_sub),
            (17.0, "PostgreSQL restart", restart_postgres),
            (
                20.0,
                "reauthorizationRequired",
                lifecycle("chatMessages", 4, "reauthorizationRequired"),
            ),
        ]
        script = [(h * scale * 3600, label, fire) for h, label, fire in script]

        clock = Clock(portal, offset_file, speed)
        clock.push()
        traffic = Traffic(portal, clock, sorted(users), chats, args.traffic)
        traffic.start()
        delivery_seq = request_seq = pending_deliveries = 0
        next_maintain = next_interval = 0.0
        gaps: dict[str, float] = {}  # resource -> simulated second its subscription went missing
        gap_log: list[tuple[str, float, float]] = []
        min_ttl: dict[str, float] = {}
        next_sample = 0.0
        end = hours * 3600

        def poll_emulator() -> None:
            nonlocal delivery_seq, request_seq, renewals, reauthorizations
            nonlocal pending_deliveries
            log = portal.control("GET", f"deliveries?since={delivery_seq}")
            pending_deliveries = log["pending"]
            for entry in log["value"]:
                delivery_seq = max(delivery_seq, entry["seq"])
                if entry["event"] == "attempt" and entry["ok"]:
                    delivered.extend(
                        {**item, "_at": entry["wall"], "_status": entry["status"]}
                        for item in entry["items"]
                    )
                elif entry["event"] == "attempt":
                    failed_attempts[entry["status"] or entry["error"]] += len(entry["items"])
                elif entry["event"] == "expired":
                    expired_events.append(entry)
                elif entry["event"] == "gave_up":
                    gave_up.append(entry)
            calls = portal.control("GET", f"requests?since={request_seq}&path=subscriptions")
            for entry in calls["value"]:
                if entry["status"] and 200 <= entry["status"] < 300:
                    if entry["method"] == "PATCH":
                        renewals += 1
                    elif entry["path"].endswith("/reauthorize"):
                        reauthorizations += 1
            request_seq = max(request_seq, calls["last_seq"])

        def watch_subscriptions(sim: float) -> None:
            from integrations.microsoft.subscriptions import parse_graph_datetime

            now = portal.control("POST", "clock", {"advance_seconds": 0})["now"]
            now_dt = parse_graph_datetime(now)
            present = {}
            for s in portal.control("GET", "subscriptions")["value"]:
                present[s["resource"]] = s
                ttl = (parse_graph_datetime(s["expirationDateTime"]) - now_dt).total_seconds()
                kind = "chatMessages" if "chats" in s["resource"] else "messages"
                min_ttl[kind] = min(min_ttl.get(kind, ttl), ttl)
            for resource in watched:
                if resource not in present and resource not in gaps:
                    gaps[resource] = sim
                elif resource in present and resource in gaps:
                    gap_log.append((resource, gaps.pop(resource), sim))

        def sample(sim: float, phase: str) -> None:
            roles = portal.children()
            samples.append(
                {
                    "sim_h": sim / 3600,
                    "real_s": time.time() - clock.real_start,
                    "phase": phase,
                    "web_kib": rss_kib(roles.get("web", [])),
                    "worker_kib": rss_kib(roles.get("worker", [])),
                    "inbox_unprocessed": db(
                        lambda: NotificationInbox.objects.filter(processed_at__isnull=True).count()
                    ),
                    "jobs_waiting": db(
                        lambda: Job.objects.filter(
                            status__in=["pending", "retrying", "running"]
                        ).count()
                    ),
                    "unsynced": len(traffic.pairs)
                    - (
                        db(lambda: SyncedItem.objects.filter(removed_at__isnull=True).count())
                        - baseline_items
                    ),
                }
            )

        while True:
            sim = clock.sim_elapsed()
            if sim >= end:
                break
            clock.push()
            while script and script[0][0] <= sim:
                _, label, fire = script.pop(0)
                try:
                    what = fire()
                except Exception as exc:  # a scripted accident that could not be staged
                    what = f"FAILED to stage: {exc!r}"
                    findings.append(f"{label}: {what}")
                marks.append((sim / 3600, label))
                print(f"  sim {sim / 3600:5.2f} h: {what}", flush=True)
            if sim >= next_maintain:
                db(subscriptions.enqueue_maintenance)
                next_maintain += 600
            if sim >= next_interval:
                db(sync.enqueue_interval_syncs)
                next_interval += 60
            poll_emulator()
            watch_subscriptions(sim)
            if sim >= next_sample:
                sample(sim, "day")
                next_sample += 900  # every 15 simulated minutes
            time.sleep(max(0.0, 1.0 - (time.time() - clock.real_start) % 1.0))

        traffic.stopping.set()
        traffic.join(timeout=10)
        clock.stop_compressing()
        print(f"  sim {hours:g} h: the day is over; draining (real time)", flush=True)
        drain_start = time.time()

        def outstanding() -> dict[str, int]:
            """What the drain still waits for (all zero: settled)."""
            return {
                "deliveries pending in the emulator": pending_deliveries,
                "inbox rows unprocessed": db(
                    lambda: NotificationInbox.objects.filter(processed_at__isnull=True).count()
                ),
                "lifecycle events unhandled": db(
                    lambda: LifecycleEvent.objects.filter(status="received").count()
                ),
                "messages not yet synced": max(0, samples[-1]["unsynced"]),
            }

        next_report = drain_start + 30
        while time.time() - drain_start < args.drain_timeout:
            poll_emulator()
            watch_subscriptions(clock.sim_elapsed())
            sample(clock.sim_elapsed(), "drain")
            waiting = {what: n for what, n in outstanding().items() if n}
            if not waiting:
                break
            if time.time() >= next_report:
                print(f"  drain, {time.time() - drain_start:.0f} s: waiting for {waiting}")
                next_report += 30
            time.sleep(3)
        else:
            findings.append(f"the drain did not settle in {args.drain_timeout:.0f} s: {waiting}")
        drain_seconds = time.time() - drain_start
        poll_emulator()

        # ---------------------------------------------------------------- checks
        print(f"\nload after: {load()}")
        print(f"drain after the day: {drain_seconds:.0f} s")
        print(
            f"traffic: {len(traffic.pairs)} message-user pairs created "
            f"({traffic.errors} control errors)"
        )
        # 1. Subscriptions.
        removal_gaps = [(r, a, b) for r, a, b in gap_log if r in removed_resource]
        other_gaps = [(r, a, b) for r, a, b in gap_log if r not in removed_resource]
        open_gaps = dict(gaps)
        lapsed = bool(expired_events or other_gaps or open_gaps)
        ok &= not lapsed
        print(
            f"subscriptions: {renewals} renewals, {reauthorizations} reauthorizations; "
            f"expired in the emulator: {len(expired_events)}; "
            f"missing outside the scripted removal: {len(other_gaps)}; still missing: "
            f"{len(open_gaps)} -> {'LAPSED' if lapsed else 'none lapsed'}"
        )
        for resource, start, stop in removal_gaps:
            print(
                f"   after subscriptionRemoved, {resource} had no subscription for "
                f"{(stop - start) / 60:.0f} simulated min ({(stop - start) / speed:.1f} s)"
            )
        for kind, ttl in sorted(min_ttl.items()):
            print(f"   least time to expiry seen, {kind}: {ttl / 3600:.1f} h")
        # 2. Every delivered notification is in the inbox and processed.
        changes = [i for i in delivered if "lifecycleEvent" not in i]
        events = [i for i in delivered if "lifecycleEvent" in i]
        inbox = {
            (s, r, c): p
            for s, r, c, p in db(
                lambda: list(
                    NotificationInbox.objects.values_list(
                        "subscription_graph_id", "resource_id", "change_type", "processed_at"
                    )
                )
            )
        }
        keys = {
            (i["subscriptionId"], (i.get("resourceData") or {}).get("id", ""), i["changeType"])
            for i in changes
        }
        missing = [k for k in keys if k not in inbox]
        unprocessed = [k for k in keys if k in inbox and inbox[k] is None]
        handled = {
            (s, e): st
            for s, e, st in db(
                lambda: list(
                    LifecycleEvent.objects.values_list("subscription_graph_id", "event", "status")
                )
            )
        }
        events_missing = [
            i for i in events if (i["subscriptionId"], i["lifecycleEvent"]) not in handled
        ]
        events_unhandled = [
            i
            for i in events
            if handled.get((i["subscriptionId"], i["lifecycleEvent"])) == "received"
        ]
        ok &= not (missing or unprocessed or events_missing or events_unhandled)
        print(
            f"notifications delivered: {len(changes)} ({len(keys)} distinct), not in the inbox: "
            f"{len(missing)}, not processed: {len(unprocessed)}; given up by the emulator "
            f"(the receiver failed for 4 h): {sum(len(g['items']) for g in gave_up)}"
        )
        refused = db(
            lambda: list(
                WebhookRejection.objects.values_list("reason", "count", "last_subscription_id")
            )
        )
        if failed_attempts:
            print(
                f"   delivery attempts the receiver did not accept (status: items): "
                f"{dict(failed_attempts)}"
            )
        if refused:
            print(f"   refused by the receiver (reason, count, last subscription): {refused}")
        print(
            f"lifecycle events delivered: {len(events)}, not stored: {len(events_missing)}, "
            f"not handled: {len(events_unhandled)}"
        )
        # 3. Every message is synced.
        have = set(
            db(
                lambda: list(
                    SyncedItem.objects.filter(removed_at__isnull=True).values_list(
                        "monitored_user__graph_id", "graph_id"
                    )
                )
            )
        )
        unsynced = [p for p in traffic.pairs if p not in have]
        ok &= not unsynced
        print(f"messages synced: {len(traffic.pairs) - len(unsynced)} of {len(traffic.pairs)}")
        # 4. Memory after the first simulated hour.
        day = [s for s in samples if s["phase"] == "day"]
        first = next((s for s in day if s["sim_h"] >= 1.0), day[0])
        for role in ("web", "worker"):
            start = first[f"{role}_kib"]
            last = day[-1][f"{role}_kib"]
            peak = max(s[f"{role}_kib"] for s in day if s["sim_h"] >= first["sim_h"])
            growth = (last - start) / start if start else float("nan")
            ok &= growth < 0.10
            print(
                f"RSS {role}: {start / 1024:.0f} MiB at {first['sim_h']:.1f} h, "
                f"{last / 1024:.0f} MiB at the end (peak {peak / 1024:.0f} MiB): "
                f"{growth:+.1%} (target < +10 %)"
            )
        peak_backlog = max(samples, key=lambda s: s["inbox_unprocessed"])
        print(
            f"backlog: peak {peak_backlog['inbox_unprocessed']} unprocessed inbox rows at "
            f"{peak_backlog['sim_h']:.1f} h; peak {max(s['jobs_waiting'] for s in samples)} "
            f"jobs waiting; peak {max(s['unsynced'] for s in samples)} messages not yet synced"
        )
        sim_of = {}  # delivery wall time -> simulated hour, for the lines below
        for item in changes:
            key = (
                item["subscriptionId"],
                (item.get("resourceData") or {}).get("id", ""),
                item["changeType"],
            )
            if key in missing[:10] and key not in sim_of:
                sim_of[key] = (item["_at"] - clock.real_start) * speed / 3600
                real = time.strftime("%H:%M:%S", time.gmtime(item["_at"]))
                print(
                    f"   NOT IN THE INBOX: {key} (HTTP {item['_status']} at simulated "
                    f"{sim_of[key]:.2f} h, real {real})"
                )
        for line in findings:
            print(f"finding: {line}")
        ok &= not findings
        (work / "samples.json").write_text(json.dumps({"samples": samples, "marks": marks}))
        chart(samples, marks, Path(args.chart), hours)
        print(f"chart: {args.chart}; samples: {work / 'samples.json'}")
        print("soak: " + ("all checks passed" if ok else "CHECKS FAILED"))
    finally:
        portal.stop()
        postgres.stop(keep_data=not ok)
        shutil.rmtree(work / "emulator", ignore_errors=True)
    return 0 if ok else 1


def chart(samples: list[dict], marks: list[tuple[float, str]], path: Path, hours: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [s["sim_h"] for s in samples]
    fig, (mem, backlog) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, dpi=100)
    mem.plot(x, [s["web_kib"] / 1024 for s in samples], label="web (gunicorn)")
    mem.plot(x, [s["worker_kib"] / 1024 for s in samples], label="worker (qcluster tree, drain)")
    mem.set_ylabel("RSS (MiB)")
    mem.set_ylim(bottom=0)
    mem.legend(loc="center right", fontsize=8)
    backlog.plot(x, [s["inbox_unprocessed"] for s in samples], label="inbox unprocessed")
    backlog.plot(x, [s["jobs_waiting"] for s in samples], label="jobs waiting")
    backlog.plot(x, [max(0, s["unsynced"]) for s in samples], label="messages not yet synced")
    backlog.set_ylabel("backlog")
    backlog.set_xlabel(f"simulated hours (the day: 0-{hours:g}; after it, the drain)")
    backlog.legend(loc="upper left", fontsize=8)
    for at, label in marks:
        for axis in (mem, backlog):
            axis.axvline(at, color="grey", linewidth=0.6, linestyle=":")
        mem.annotate(
            label,
            (at, 0),
            rotation=90,
            fontsize=6,
            va="bottom",
            xytext=(2, 2),
            textcoords="offset points",
        )
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
