"""Event push throughput: N events fanned out to 5 endpoints served by a fast local receiver,
against the plain Job layer draining as many no-op jobs as there are delivery jobs, in the
same run and with the same cluster settings.

    python bench/events/run.py [--quick] [--events N] [--endpoints N] [--workers N] [--rounds N]

Prints delivery jobs/s and events delivered/s, the ratio of delivery jobs/s to no-op jobs/s
(target >= 0.7), and the latency from an event's commit to its arrival at the receiver
(p50/p99) for a trickle of events emitted while the cluster runs. The receiver answers 200
without verifying (a fast receiver). It speaks HTTPS with a certificate of its own local CA
(EVENT_ENDPOINT_CA_BUNDLE) on 127.0.0.1 (EVENT_ENDPOINT_ALLOWED_NETWORKS=127.0.0.0/8), so the
portal runs as in production: DEBUG off (an http endpoint would need DEBUG, whose query log
slows every worker). It keeps connections alive (HTTP/1.1), so the workers' kept-alive
connections are reused as with a real receiver.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import bench_env, ensure_database, setup_django, start_cluster, stop, wait_for
from integrations.graph_emulator.certs import ensure_certs, server_context

ARRIVALS: dict[str, float] = {}  # event id -> arrival time (perf_counter)
LOCK = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    # Keeps connections alive, as any production web server does (HTTP/1.0 would make the
    # portal open a new connection, and this server a new thread, for every delivery).
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        now = time.perf_counter()
        events = json.loads(body)["data"]["events"]
        with LOCK:
            for event in events:
                ARRIVALS.setdefault(f"{self.path}:{event['id']}", now)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 events instead of 10,000")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trickle", type=int, default=100, help="events timed one by one")
    parser.add_argument("--rounds", type=int, default=2, help="alternating push/no-op rounds")
    args = parser.parse_args()
    count = args.events or (2000 if args.quick else 10_000)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    ca, cert, key = ensure_certs(Path(tempfile.mkdtemp(prefix="bench-events-")))
    server.socket = server_context(cert, key).wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    env = bench_env(
        Q_WORKERS=str(args.workers),
        EVENT_ENDPOINT_ALLOWED_NETWORKS="127.0.0.0/8",
        EVENT_ENDPOINT_CA_BUNDLE=str(ca),
    )
    ensure_database(env)
    setup_django(env)

    from django.db import transaction
    from django_q.models import OrmQ

    from portal.access.actors import Actor
    from portal.events import push
    from portal.events.models import Event, EventDelivery, EventEndpoint
    from portal.events.services import emit_many
    from portal.jobs.models import Job, JobAttempt
    from portal.jobs.runner import enqueue

    def reset() -> None:
        OrmQ.objects.all().delete()
        JobAttempt.objects.all().delete()
        Job.objects.all().delete()
        EventDelivery.objects.all().delete()
        EventEndpoint.objects.all().delete()
        Event.objects.all().delete()

    actor = Actor.system("bench")

    def push_round() -> tuple[int, float]:
        """1. Fan-out and delivery of `count` events to every endpoint: (jobs, seconds)."""
        reset()
        ARRIVALS.clear()
        for n in range(args.endpoints):
            push.create_endpoint(actor, f"https://127.0.0.1:{port}/ep{n}")
        with transaction.atomic():
            emit_many(
                ("mail.received", {"graphId": f"m{i}", "subject": "bench"}, "bench", None)
                for i in range(count)
            )
        OrmQ.objects.all().delete()  # the commit's fan-out kick: the timed run starts it itself
        Job.objects.all().delete()
        started = time.perf_counter()
        made = push.fan_out()
        while made:
            made = push.fan_out()
        fan_out_seconds = time.perf_counter() - started
        deliveries = EventDelivery.objects.count()
        expected = count * args.endpoints
        cluster = start_cluster(env)
        try:
            drain = wait_for(lambda: len(ARRIVALS) >= expected, timeout=1200, interval=0.2)
        finally:
            stop(cluster)
        print(
            f"fan-out: {deliveries} delivery jobs for {count} events x {args.endpoints} "
            f"endpoints made in {fan_out_seconds:.2f}s"
        )
        print(
            f"   push: drained in {drain:6.2f}s ({deliveries / drain:6.0f} delivery jobs/s, "
            f"{expected / drain:7.0f} events delivered/s)"
        )
        return deliveries, drain

    def noop_round(jobs: int) -> float:
        """2. The plain Job layer: as many no-op jobs, the same cluster settings."""
        reset()
        with transaction.atomic():
            for _ in range(jobs):
                enqueue("jobs.noop")
        cluster = start_cluster(env)
        try:
            drain = wait_for(
                lambda: (
                    not Job.objects.exclude(status="succeeded").exists()
                    and not OrmQ.objects.exists()
                ),
                timeout=600,
            )
        finally:
            stop(cluster)
        print(f"  no-op: {jobs} jobs drained in {drain:6.2f}s ({jobs / drain:6.0f} jobs/s)")
        return drain

    # Rounds alternate the order (push then no-op, then no-op then push, …), so a change in
    # the machine's load during the run weighs on both sides; the ratio pools every round.
    push_jobs = push_seconds = noop_seconds = 0.0
    deliveries = 0
    for number in range(1, args.rounds + 1):
        if number % 2:
            deliveries, drain = push_round()
            noop_drain = noop_round(deliveries)
        else:
            noop_drain = noop_round(deliveries)
            deliveries, drain = push_round()
        print(f"round {number}: ratio {(deliveries / drain) / (deliveries / noop_drain):.2f}")
        push_jobs += deliveries
        push_seconds += drain
        noop_seconds += noop_drain
    ratio = (push_jobs / push_seconds) / (push_jobs / noop_seconds)
    print(
        f"ratio (delivery jobs/s / no-op jobs/s) over {args.rounds} rounds: {ratio:.2f} "
        "(target >= 0.70)"
    )

    # 3. Latency: events emitted one at a time while the cluster runs (commit → receiver).
    reset()
    ARRIVALS.clear()
    push.create_endpoint(actor, f"https://127.0.0.1:{port}/latency")
    cluster = start_cluster(env)
    latencies = []
    try:
        time.sleep(3)  # the cluster's start-up is not part of an event's latency
        for i in range(args.trickle):
            with transaction.atomic():
                event = emit_many([("mail.received", {"n": i}, "bench", None)])[0]
            committed = time.perf_counter()
            key = f"/latency:{event.pk}"
            wait_for(lambda key=key: key in ARRIVALS, timeout=60, interval=0.005)
            latencies.append(ARRIVALS[key] - committed)
            time.sleep(0.05)
    finally:
        stop(cluster)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"latency commit → receiver over {len(latencies)} events: p50 {p50 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms (target p99 < 5 s)"
    )
    server.shutdown()
    return 0 if ratio >= 0.7 and p99 < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
