"""End-to-end latency: a mail or chat message created in the Graph emulator until its Fleet
event can be read from GET /api/events, and until it is pushed to an event endpoint, with
real-time sync on.

    python bench/end_to_end/run.py [--quick] [--levels 1,10,100]

The portal runs as `make run` starts it (`manage.py runportal`: emulator, web, worker and
whatever else runportal starts) on PostgreSQL (BENCH_DATABASE_URL, default
…/fleet_e2e_bench, dropped and recreated). The emulator's own demo traffic is switched off;
this script creates the messages through the emulator's control API instead, at the demo's
rate (one message every 20 s, 60 % mail, 40 % chat: integrations/graph_emulator/demo.py) and
at multiples of it, with exponential gaps. A reader long-polls /api/events with a service
client's token, as the Fleet side does; an HTTPS receiver in this process (its own local CA,
EVENT_ENDPOINT_CA_BUNDLE) is an event endpoint for mail.received and chat_message.received
and verifies each delivery's signature with the standardwebhooks library, as a Fleet service
does.

Each sample is one (message, monitored user) pair: a chat message reaches every monitored
member of its chat. It is timed from the outside, with the timestamps the pipeline records:

    created        this script, just before POST /_emulator/mail or /_emulator/chat-message
    received       NotificationInbox.received_at   (emulator → receiver: Graph's batching
                                                    delay, the POST, the receiver's insert)
    processed      NotificationInbox.processed_at  (inbox → claimed by a worker)
    synced         SyncedItem.first_seen_at        (the delta job: queue, Graph call)
    read           the reader got the event        (SyncedItem → event: commit, the feed's
                                                    long-poll)
    pushed         the receiver got the event      (SyncedItem → event → fan-out job →
                                                    delivery job → signed POST), timed
                                                    separately from `read`

A delta job started for an earlier notification may bring a message before its own
notification is claimed; its claim stage then ends at the sync (counted as "overtaken").

Prints p50/p95/p99 per load level and each stage's share of the total; the ratio printed is
p99 at 10x against p99 at the demo's load in the same run (what load costs). Targets: p99 < 3 s
at 10x to the feed (the ingest issue), p99 < 5 s at the demo's load and at 10x to the push
receiver (the gateway issue). Exits 1 when a target is missed or a sample never arrives.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks.webhooks import Webhook

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    Portal,
    bench_env,
    fresh_database,
    load,
    percentile,
    setup_django,
)
from integrations.graph_emulator.certs import ensure_certs, server_context

DEMO_INTERVAL_S = 20.0  # integrations/graph_emulator/config.py demo.interval_s
MAIL_SHARE = 0.6  # integrations/graph_emulator/demo.py
STAGES = ("received", "processed", "synced", "read")
STAGE_LABELS = {
    "received": "emulator → receiver (inbox received_at)",
    "processed": "inbox → claimed (processed_at)",
    "synced": "claimed → SyncedItem (delta job, Graph call)",
    "read": "SyncedItem → event read from /api/events",
}


class EventReader(threading.Thread):
    """Long-polls GET /api/events like the Fleet side and notes when each event arrived."""

    def __init__(self, url: str, token: str, after: int) -> None:
        super().__init__(daemon=True)
        import requests

        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.url = url
        self.cursor = str(after)
        self.arrivals: dict[tuple[str, str], float] = {}  # (user graph id, item id) -> time
        self.seen_ids: set[int] = set()
        self.errors = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                response = self.session.get(
                    self.url, params={"after": self.cursor, "wait": 5, "limit": 500}, timeout=30
                )
                now = time.time()
                response.raise_for_status()
                page = response.json()
            except Exception:
                self.errors += 1
                time.sleep(0.2)
                continue
            for event in page["events"]:
                self.seen_ids.add(int(event["id"]))
                if event["type"] in ("mail.received", "chat_message.received"):
                    key = (event["subject"], event["data"].get("graphId"))
                    self.arrivals.setdefault(key, now)
            self.cursor = page["nextCursor"]


class PushReceiver(ThreadingHTTPServer):
    """An event endpoint over HTTPS that verifies every delivery (standardwebhooks) and notes
    when each event arrived; a delivery that fails verification is answered 400 and counted."""

    daemon_threads = True

    def __init__(self, state_dir: Path) -> None:
        ca, cert, key = ensure_certs(state_dir)
        self.ca_bundle = ca
        self.webhook: Webhook | None = None  # set once the endpoint's secret is known
        self.arrivals: dict[tuple[str, str], float] = {}  # (user graph id, item id) -> time
        self.deliveries = self.bad_signatures = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _PushHandler)
        self.socket = server_context(cert, key).wrap_socket(self.socket, server_side=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}/fleet-events"


class _PushHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept-alive connections, as a production server
    server: PushReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        now = time.time()
        try:
            assert self.server.webhook is not None
            self.server.webhook.verify(body, dict(self.headers.items()))
        except Exception:
            with self.server.lock:
                self.server.bad_signatures += 1
            self.send_response(400)
        else:
            with self.server.lock:
                self.server.deliveries += 1
                for event in json.loads(body)["data"]["events"]:
                    key = (event["subject"], event["data"].get("graphId"))
                    self.server.arrivals.setdefault(key, now)
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages per level")
    parser.add_argument("--levels", default="1,10,100", help="multiples of the demo's rate")
    parser.add_argument("--web-port", type=int, default=18200)
    parser.add_argument("--emulator-port", type=int, default=18201)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    levels = [float(x) for x in args.levels.split(",")]
    # Messages per level: enough for a p99 where the rate allows it in a few minutes.
    counts = {1.0: 6 if args.quick else 15, 10.0: 20 if args.quick else 90}
    default_count = 100 if args.quick else 600

    env = bench_env(
        DATABASE_URL=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fleet_e2e_bench"
        ),
        LOG_LEVEL="WARNING",
    )
    state_dir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    receiver = PushReceiver(state_dir / "receiver")
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env.update(
        EVENT_ENDPOINT_ALLOWED_NETWORKS="127.0.0.0/8",
        EVENT_ENDPOINT_CA_BUNDLE=str(receiver.ca_bundle),
    )
    portal = Portal(env, args.web_port, args.emulator_port, state_dir)
    env = portal.prepare()
    print(f"load before: {load()}")
    fresh_database(env)
    setup_django(env)

    from integrations.microsoft.models import MonitoredUser, SyncState
    from portal.access.actors import Actor
    from portal.access.service_clients import create_client
    from portal.events.endpoints import create_endpoint
    from portal.events.models import Event
    from portal.runtime.registry import get

    portal.start()
    results: dict[float, dict] = {}
    ok = True
    try:
        # runportal's demo_bootstrap: 5 users x (mail, chats).
        portal.wait_ready(subscriptions=10)
        portal.control("POST", "config", {"demo": {"interval_s": 1e9}})
        assert get("ENABLE_REALTIME_SYNC"), "real-time sync must be on (the default)"
        users = {u.graph_id: u for u in MonitoredUser.objects.filter(is_active=True)}
        # The baseline rounds (they emit nothing) finish before we start timing.
        deadline = time.time() + 120
        while SyncState.objects.filter(last_success_at__isnull=True).exists():
            if time.time() > deadline:
                raise RuntimeError("the baseline delta rounds did not finish")
            time.sleep(0.5)
        tenant = portal.control("GET", "tenant")
        chats = [
            (c["id"], [m for m in c["members"] if m in users])
            for c in tenant["chats"]
            if any(m in users for m in c["members"])
        ]
        bench_actor = Actor.command("bench_end_to_end")
        _, token = create_client(bench_actor, "bench-e2e", ["events:read"])
        _, secret = create_endpoint(
            bench_actor,
            receiver.url,
            ["mail.received", "chat_message.received"],
            "bench/end_to_end receiver",
        )
        receiver.webhook = Webhook(secret)
        reader = EventReader(
            f"{portal.web_url}/api/events",
            token,
            Event.objects.order_by("-id").values_list("id", flat=True).first() or 0,
        )
        reader.start()
        rng = random.Random(args.seed)
        delivery_seq = 0
        for level in levels:
            count = counts.get(level, default_count)
            rate = level / DEMO_INTERVAL_S
            samples: list[dict] = []
            started = time.time()
            next_at = time.monotonic()
            for _ in range(count):
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += rng.expovariate(rate)
                created = time.time()
                if rng.random() < MAIL_SHARE:
                    to = rng.choice(list(users))
                    out = portal.control(
                        "POST", "mail", {"to": to, "subject": "bench e2e", "body": "bench"}
                    )
                    samples += [
                        {"kind": "messages", "user": to, "id": out["id"], "created": created}
                    ]
                else:
                    chat_id, members = rng.choice(chats)
                    out = portal.control(
                        "POST", "chat-message", {"chat_id": chat_id, "body": "bench e2e"}
                    )
                    samples += [
                        {"kind": "chatMessages", "user": m, "id": out["id"], "created": created}
                        for m in members
                    ]
            sent_for = time.time() - started
            wanted = {(s["user"], s["id"]) for s in samples}
            # Long enough for the emulator's redeliveries (Graph-like backoff: 30 s, 60 s, …).
            deadline = time.time() + 300
            while time.time() < deadline and not (
                wanted <= reader.arrivals.keys() and wanted <= receiver.arrivals.keys()
            ):
                time.sleep(0.2)
            results[level] = measure(samples, reader, users)
            pushed = [
                receiver.arrivals[k] - s["created"]
                for s in samples
                if (k := (s["user"], s["id"])) in receiver.arrivals
            ]
            results[level]["pushed"] = {
                "count": len(pushed),
                **{f"p{q}": percentile(pushed, q / 100) for q in (50, 95, 99)},
                "max": max(pushed, default=float("nan")),
            }
            results[level]["rate"] = count / sent_for
            results[level]["messages"] = count
            log = portal.control("GET", f"deliveries?since={delivery_seq}")["value"]
            delivery_seq = max([delivery_seq, *(e["seq"] for e in log)])
            results[level]["failed_deliveries"] = [
                f"{e['status'] or e['error']} after {e['elapsed_ms']:.0f} ms"
                for e in log
                if e["event"] == "attempt" and not e["ok"]
            ]
            report(level, results[level])
            ok &= results[level]["missing"] == 0 and results[level]["pushed"]["count"] == len(
                samples
            )
        reader.stopping.set()
    finally:
        portal.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
    print(f"load after: {load()}")
    if 10.0 in results and 1.0 in results:
        p99_10 = results[10.0]["total"]["p99"]
        ratio = p99_10 / results[1.0]["total"]["p99"]
        print(
            f"p99 at 10x: {p99_10:.2f} s (target < 3 s: {'met' if p99_10 < 3 else 'MISSED'}); "
            f"ratio p99 10x / p99 demo load: {ratio:.2f}"
        )
        ok &= p99_10 < 3
    for level in (1.0, 10.0):
        if level in results:
            p99 = results[level]["pushed"]["p99"]
            print(
                f"p99 created → pushed to the receiver at {level:g}x: {p99:.2f} s "
                f"(target < 5 s: {'met' if p99 < 5 else 'MISSED'})"
            )
            ok &= p99 < 5
    print(
        f"push receiver: {receiver.deliveries} signed deliveries verified, "
        f"{receiver.bad_signatures} refused"
    )
    ok &= receiver.bad_signatures == 0
    return 0 if ok else 1


def measure(samples: list[dict], reader: EventReader, users: dict) -> dict:
    """Per-stage durations. The stages overlap when a delta job started for an earlier
    notification already brings the message: then it is synced before its own notification
    is claimed. Such a sample's claim stage ends at the sync ("overtaken", counted)."""
    from django.db.models import Min

    from integrations.microsoft.models import NotificationInbox, SyncedItem
    from portal.events.models import Event

    by_user = {gid: u.pk for gid, u in users.items()}
    ids = {s["id"] for s in samples}
    inbox = {
        (row["monitored_user_id"], row["resource_id"]): row
        for row in NotificationInbox.objects.filter(resource_id__in=ids, change_type="created")
        .values("monitored_user_id", "resource_id")
        .annotate(received=Min("received_at"), processed=Min("processed_at"))
    }
    synced = {
        (row["monitored_user_id"], row["graph_id"]): row["first_seen_at"]
        for row in SyncedItem.objects.filter(graph_id__in=ids).values(
            "monitored_user_id", "graph_id", "first_seen_at"
        )
    }
    stages: dict[str, list[float]] = {name: [] for name in (*STAGES, "total")}
    missing: list[str] = []
    overtaken = 0
    for s in samples:
        key = (by_user[s["user"]], s["id"])
        row = inbox.get(key)
        seen = synced.get(key)
        read = reader.arrivals.get((s["user"], s["id"]))
        if row is None or row["processed"] is None or seen is None or read is None:
            event = Event.objects.filter(subject=s["user"], data__graphId=s["id"]).first()
            missing.append(
                f"{s['kind']} {s['id']} for {s['user']}: "
                + ("no inbox row" if row is None else "")
                + ("not processed " if row is not None and row["processed"] is None else "")
                + ("no SyncedItem " if seen is None else "")
                + (
                    ""
                    if read is not None
                    else "no event"
                    if event is None
                    else f"event #{event.pk} not read"
                    + (" (the reader saw that id)" if event.pk in reader.seen_ids else "")
                )
            )
            continue
        claimed = min(row["processed"], seen)
        overtaken += claimed != row["processed"]
        points = [
            s["created"],
            row["received"].timestamp(),
            claimed.timestamp(),
            seen.timestamp(),
            read,
        ]
        for name, start, end in zip(STAGES, points, points[1:], strict=False):
            stages[name].append(end - start)
        stages["total"].append(read - s["created"])
    out: dict = {
        "samples": len(samples),
        "missing": len(missing),
        "missing_detail": missing,
        "overtaken": overtaken,
    }
    for name, values in stages.items():
        out[name] = {
            "mean": statistics.fmean(values) if values else float("nan"),
            "p50": percentile(values, 0.50),
            "p95": percentile(values, 0.95),
            "p99": percentile(values, 0.99),
            "max": max(values, default=float("nan")),
        }
    return out


def report(level: float, r: dict) -> None:
    t = r["total"]
    print(
        f"\n{level:g}x the demo's load ({r['messages']} messages at {r['rate']:.2f}/s, "
        f"{r['samples']} message-user samples, {r['missing']} missing): created → event read "
        f"p50 {t['p50']:.2f} s, p95 {t['p95']:.2f} s, p99 {t['p99']:.2f} s, max {t['max']:.2f} s; "
        f"{r['overtaken']} synced before their own notification was claimed"
    )
    p = r["pushed"]
    print(
        f"   created → pushed to the endpoint (signed, verified): {p['count']} of {r['samples']}; "
        f"p50 {p['p50']:.2f} s, p95 {p['p95']:.2f} s, p99 {p['p99']:.2f} s, max {p['max']:.2f} s"
    )
    for line in r["missing_detail"]:
        print(f"   MISSING {line}")
    if r["failed_deliveries"]:
        print(
            f"   {len(r['failed_deliveries'])} notification POSTs the receiver did not accept "
            f"(the emulator retried them later): {', '.join(r['failed_deliveries'][:5])}"
        )
    whole = sum(r[name]["mean"] for name in STAGES) or 1
    for name in STAGES:
        s = r[name]
        print(
            f"   {STAGE_LABELS[name]:<46} mean {s['mean']:6.3f} s  p50 {s['p50']:6.3f}  "
            f"p95 {s['p95']:6.3f}  p99 {s['p99']:6.3f}  share {s['mean'] / whole:5.1%}"
        )


if __name__ == "__main__":
    sys.exit(main())
