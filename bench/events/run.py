"""Event push throughput: N events fanned out to 5 endpoints served by a fast local receiver,
against the plain Job layer draining as many no-op jobs as there are delivery jobs, in the
same run and with the same cluster settings.

    python bench/events/run.py [--quick] [--events N] [--endpoints N] [--workers N] [--rounds N]

Prints delivery jobs/s and events delivered/s, the ratio of delivery jobs/s to no-op jobs/s
(target >= 0.7), and the latency from an event's commit to its arrival at the receiver
(p50/p99) for a trickle of events emitted while the cluster runs. The ratio is taken over
the busy time of each drain (first job started to last job finished, from the Job table),
so the cluster's start-up, the same for both, is not counted; the ratio with start-up is
printed too. The tables the drains write are vacuumed before each drain: this machine's
PostgreSQL runs without autovacuum, and the dead rows of one round slow the next.

The receiver answers 200 without verifying (a fast receiver). It speaks HTTPS with a
certificate of its own local CA (EVENT_ENDPOINT_CA_BUNDLE) on 127.0.0.1
(EVENT_ENDPOINT_ALLOWED_NETWORKS=127.0.0.0/8), so the portal runs as in production: DEBUG off
(an http endpoint would need DEBUG, whose query log slows every worker). It keeps
connections alive (HTTP/1.1), so the workers' kept-alive connections are reused as with a
real receiver.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import bench_env, ensure_database, setup_django, start_cluster, stop, wait_for
from integrations.graph_emulator.certs import ensure_certs, server_context

ARRIVALS: dict[str, float] = {}  # event id -> arrival time (perf_counter)
LOCK = threading.Lock()


class Receiver:
    """A fast receiver: HTTPS, HTTP/1.1 keep-alive, one thread per connection, and no more
    parsing than a POST with a Content-Length needs (http.server's header parsing and
    per-request objects cost the shared 2 cores about 0.4 ms a delivery, 10 % of one). It
    records each event's first arrival and answers 200 with an empty body."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = next(
                    int(line.split(":", 1)[1])
                    for line in lines[1:]
                    if line.lower().startswith("content-length:")
                )
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                now = time.perf_counter()
                events = json.loads(body)["data"]["events"]
                with LOCK:
                    for event in events:
                        ARRIVALS.setdefault(f"{path}:{event['id']}", now)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except (OSError, ssl.SSLError):
            return


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
    ca, cert, key = ensure_certs(Path(tempfile.mkdtemp(prefix="bench-events-")))
    port = Receiver(server_context(cert, key)).port
    env = bench_env(
        Q_WORKERS=str(args.workers),
        EVENT_ENDPOINT_ALLOWED_NETWORKS="127.0.0.0/8",
        EVENT_ENDPOINT_CA_BUNDLE=str(ca),
    )
    ensure_database(env)
    setup_django(env)

    from django.db import connection, transaction
    from django.db.models import Max, Min
    from django_q.models import OrmQ

    from portal.access.actors import Actor
    from portal.events.endpoints import create_endpoint
    from portal.events.fan_out import fan_out_endpoint
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

    def settle() -> None:
        """VACUUM ANALYZE what a round wrote, right before its cluster starts: autovacuum is
        off on these machines, and the dead rows of earlier rounds (deleted jobs, the fan-out's
        updates) would slow later rounds' index scans by a third (measured)."""
        with connection.cursor() as cursor:
            for model in (OrmQ, JobAttempt, Job, EventDelivery, EventEndpoint, Event):
                cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")

    actor = Actor.system("bench")

    def busy_seconds(job_type: str) -> float:
        """From the first claim of a job of this type to the last finish: the drain without
        the cluster's start-up."""
        window = Job.objects.filter(job_type=job_type).aggregate(
            first=Min("started_at"), last=Max("finished_at")
        )
        return (window["last"] - window["first"]).total_seconds()

    def push_round() -> tuple[int, float, float]:
        """1. Fan-out and delivery of `count` events to every endpoint: (jobs, drain, busy)."""
        reset()
        ARRIVALS.clear()
        for n in range(args.endpoints):
            create_endpoint(actor, f"https://127.0.0.1:{port}/ep{n}")
        with transaction.atomic():
            emit_many(
                ("mail.received", {"graphId": f"m{i}", "subject": "bench"}, "bench", None)
                for i in range(count)
            )
        OrmQ.objects.all().delete()  # the commit's fan-out kick: the timed run starts it itself
        Job.objects.all().delete()
        started = time.perf_counter()
        # The fan-out, made here in one run per endpoint (timed apart): fan_out()'s batch
        # limit would queue follow-up fan-out jobs, which would find nothing left to do.
        for endpoint in EventEndpoint.objects.all():
            fan_out_endpoint(endpoint.pk, max_batches=count)
        fan_out_seconds = time.perf_counter() - started
        deliveries = EventDelivery.objects.count()
        expected = count * args.endpoints
        settle()
        # Deliveries run on their own queue: its cluster, with as many workers as the no-op
        # round's.
        cluster = start_cluster(env, queue="events")
        try:
            drain = wait_for(lambda: len(ARRIVALS) >= expected, timeout=1200, interval=0.2)
        finally:
            stop(cluster)
        print(
            f"fan-out: {deliveries} delivery jobs for {count} events x {args.endpoints} "
            f"endpoints made in {fan_out_seconds:.2f}s"
        )
        busy = busy_seconds("events.deliver")
        print(
            f"   push: drained in {drain:6.2f}s ({deliveries / drain:6.0f} delivery jobs/s, "
            f"{expected / drain:7.0f} events delivered/s); busy {busy:6.2f}s "
            f"({deliveries / busy:6.0f} delivery jobs/s)"
        )
        return deliveries, drain, busy

    def noop_round(jobs: int) -> tuple[float, float]:
        """2. The plain Job layer: as many no-op jobs, the same cluster settings: (drain, busy)."""
        reset()
        with transaction.atomic():
            for _ in range(jobs):
                enqueue("jobs.noop")
        settle()
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
        busy = busy_seconds("jobs.noop")
        print(
            f"  no-op: {jobs} jobs drained in {drain:6.2f}s ({jobs / drain:6.0f} jobs/s); "
            f"busy {busy:6.2f}s ({jobs / busy:6.0f} jobs/s)"
        )
        return drain, busy

    # Rounds alternate the order (push then no-op, then no-op then push, …), so a change in
    # the machine's load during the run weighs on both sides; the ratios pool every round.
    # Two ratios: of the drains as timed from outside (each includes the cluster's start-up,
    # about 0.6 s, which flatters the slower side), and of the busy windows (first claim to
    # last finish in the Job table: the steady rate, the target's measure).
    totals = {"push": 0.0, "noop": 0.0, "push busy": 0.0, "noop busy": 0.0}
    deliveries = 0
    for number in range(1, args.rounds + 1):
        if number % 2:
            deliveries, drain, busy = push_round()
            noop_drain, noop_busy = noop_round(deliveries)
        else:
            noop_drain, noop_busy = noop_round(deliveries)
            deliveries, drain, busy = push_round()
        print(
            f"round {number}: ratio {noop_busy / busy:.2f} busy, {noop_drain / drain:.2f} drained"
        )
        for name, seconds in zip(totals, (drain, noop_drain, busy, noop_busy), strict=True):
            totals[name] += seconds
    # The same number of jobs on both sides: the ratio of rates is the ratio of times.
    ratio = totals["noop busy"] / totals["push busy"]
    print(
        f"ratio (delivery jobs/s / no-op jobs/s) over {args.rounds} rounds: {ratio:.2f} busy "
        f"(target >= 0.70), {totals['noop'] / totals['push']:.2f} drained with start-up"
    )

    # 3. Latency: events emitted one at a time while the cluster runs (commit → receiver).
    reset()
    ARRIVALS.clear()
    create_endpoint(actor, f"https://127.0.0.1:{port}/latency")
    # The fan-out runs on the main queue, the deliveries on theirs.
    clusters = [start_cluster(env), start_cluster(env, queue="events")]
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
        for cluster in clusters:
            stop(cluster)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"latency commit → receiver over {len(latencies)} events: p50 {p50 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms (target p99 < 5 s)"
    )
    return 0 if ratio >= 0.7 and p99 < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
