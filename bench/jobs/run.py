"""5,000 no-op jobs through the Job layer vs 5,000 plain django-q2 tasks, same cluster settings.

    python bench/jobs/run.py [--quick] [--jobs N] [--workers N]

Each run enqueues everything first, then starts `qcluster` and times the drain (cluster start
to the last job done). Target: Job-layer throughput at least 0.7 times plain django-q2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import bench_env, ensure_database, setup_django, start_cluster, stop, wait_for


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 jobs instead of 5,000")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    count = args.jobs or (1000 if args.quick else 5000)
    env = bench_env(Q_WORKERS=str(args.workers))
    ensure_database(env)
    setup_django(env)

    from django.db import transaction
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from portal.jobs.models import Job, JobAttempt
    from portal.jobs.runner import enqueue

    def reset() -> None:
        OrmQ.objects.all().delete()
        JobAttempt.objects.all().delete()
        Job.objects.all().delete()

    results = {}
    for name in ("plain django-q2", "Job layer"):
        reset()
        started = time.perf_counter()
        with transaction.atomic():
            for _ in range(count):
                if name == "plain django-q2":
                    async_task("bench.jobs.tasks.noop")
                else:
                    enqueue("jobs.noop")
        enqueue_seconds = time.perf_counter() - started
        cluster = start_cluster(env)
        try:
            if name == "plain django-q2":
                drain = wait_for(lambda: not OrmQ.objects.exists(), timeout=600)
            else:
                drain = wait_for(
                    lambda: (
                        not Job.objects.exclude(status="succeeded").exists()
                        and not OrmQ.objects.exists()
                    ),
                    timeout=600,
                )
        finally:
            stop(cluster)
        results[name] = (enqueue_seconds, drain)
        print(
            f"{name:>16}: enqueue {count} in {enqueue_seconds:6.2f}s "
            f"({count / enqueue_seconds:7.0f}/s); drain in {drain:6.2f}s "
            f"({count / drain:6.0f} jobs/s)"
        )
    ratio = results["plain django-q2"][1] / results["Job layer"][1]
    print(f"ratio (Job layer throughput / plain django-q2): {ratio:.2f} (target >= 0.70)")
    return 0 if ratio >= 0.7 else 1


if __name__ == "__main__":
    sys.exit(main())
