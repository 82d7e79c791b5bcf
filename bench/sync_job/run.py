"""One notification's delta job, in this process: SQL statements and milliseconds per job.

    python bench/sync_job/run.py [--quick] [--jobs N] [--endpoint]

The job bench/end_to_end's floor calls "sync job", without the rest of the pipeline: a
monitored mailbox whose first round is done gets one new mail in the emulator, a delta job
is requested as a notification requests it, and `run_job` runs it as a worker does (the
job's claim, the sync lease, one Graph delta page, the page's transaction with its feed
event, the job's outcome). With `--endpoint` an active event endpoint makes each job's
events kick the fan-out, which runs in the same `run_job` as a follow-up (as in the floor).
The once-a-second release sweep is kept out of the figures (it is amortised over jobs).

Reported: statements per job (django's CaptureQueriesContext over the first jobs, BEGIN and
COMMIT included on PostgreSQL) and the job's wall time, median / p90 / p99 over the rest
(timed without capturing). Figures only, no target: it shows what a change to the sync
engine or the job runner costs or saves, on a machine quiet enough to compare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    bench_env,
    emulator_env,
    ensure_database,
    load,
    percentile,
    setup_django,
)

COUNTED = 5  # jobs whose statements are captured (and not timed)
IDENTIFIER = "sync-job-bench"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="60 jobs instead of 300")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--endpoint", action="store_true", help="with the fan-out follow-up")
    args = parser.parse_args()
    jobs = args.jobs or (60 if args.quick else 300)

    from integrations.graph_emulator.testing import RunningEmulator

    emulator = RunningEmulator().start()
    try:
        env = bench_env(
            **emulator_env(emulator),
            EVENT_ENDPOINT_ALLOWED_NETWORKS="127.0.0.0/8",
        )
        ensure_database(env)
        setup_django(env)
        counts, times = run(emulator, jobs, args.endpoint)
    finally:
        emulator.stop()
    print(f"load: {load()}")
    print(
        f"sync job{' with its fan-out' if args.endpoint else ''}: "
        f"{statistics.median(counts):.0f} statements (min {min(counts)}, max {max(counts)}); "
        f"{len(times)} jobs: p50 {statistics.median(times):.1f} ms, "
        f"p90 {percentile(times, 0.9):.1f} ms, p99 {percentile(times, 0.99):.1f} ms, "
        f"max {max(times):.1f} ms"
    )
    return 0


def run(emulator, jobs: int, endpoint: bool) -> tuple[list[int], list[float]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from integrations.microsoft import sync
    from integrations.microsoft.models import Credential, MonitoredUser
    from portal.access.actors import Actor
    from portal.events.endpoints import create_endpoint
    from portal.events.models import EventEndpoint
    from portal.jobs import runner

    Credential.objects.all().delete()  # each run's emulator has a new client secret
    MonitoredUser.objects.filter(identifier=IDENTIFIER).delete()
    EventEndpoint.objects.filter(state=EventEndpoint.State.ACTIVE).update(
        state=EventEndpoint.State.PAUSED
    )
    if endpoint:
        # Nothing listens there: the deliveries' jobs go to the events queue, not run here.
        create_endpoint(Actor.system("bench:sync_job"), "https://127.0.0.1:9/events", [], "")
    tenant = emulator.control.tenant()
    seeded = next(u for u in tenant["users"] if not u["userPrincipalName"].startswith("fleet.bot"))
    user = MonitoredUser.objects.create(
        identifier=IDENTIFIER,
        graph_id=seeded["id"],
        upn=seeded["userPrincipalName"],
        display_name=seeded["displayName"],
    )
    state = sync.ensure_state(user.pk, "messages")
    sync.run(state.pk, trigger="bench")  # the first round: the baseline, no events
    counts: list[int] = []
    times: list[float] = []
    for n in range(jobs):
        emulator.control.create_mail(seeded["userPrincipalName"], subject=f"sync job bench {n}")
        job = sync.request_delta(user.pk, "messages", trigger="notification")
        runner._last_opportunistic_release = time.monotonic()
        if n < COUNTED:
            with CaptureQueriesContext(connection) as queries:
                outcome = runner.run_job(job.pk)
            counts.append(len(queries.captured_queries))
        else:
            started = time.perf_counter()
            outcome = runner.run_job(job.pk)
            times.append((time.perf_counter() - started) * 1000)
        if outcome != "succeeded":
            raise RuntimeError(f"job {job.pk}: {outcome}")
    return counts, times


if __name__ == "__main__":
    sys.exit(main())
