"""Retry 100,000 dead jobs: time from the operator's confirmation until every one is queued.

    python bench/retry_all/run.py [--quick] [--jobs N]

"Queued" means pending in the Job table and on django-q2's broker. No worker runs the retried
jobs; the bulk operation itself runs in-process as a worker would run it. Target: ≤ 30 s for
100,000 on PostgreSQL. The baseline is one plain UPDATE of the same rows (the floor for any
design that marks them pending), measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import bench_env, ensure_database, setup_django


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 jobs instead of 100,000")
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args()
    count = args.jobs or (10_000 if args.quick else 100_000)
    env = bench_env()
    ensure_database(env)
    setup_django(env)

    from django.db import connection
    from django_q.models import OrmQ

    from portal.access.actors import Actor
    from portal.jobs.models import BulkOperation, Job, JobAttempt
    from portal.jobs.runner import run_job
    from portal.jobs.services import JobFilter, start_retry_all

    def seed() -> None:
        OrmQ.objects.all().delete()
        JobAttempt.objects.all().delete()
        BulkOperation.objects.all().delete()
        Job.objects.all().delete()
        for start in range(0, count, 10_000):
            Job.objects.bulk_create(
                Job(
                    job_type="jobs.noop",
                    status=Job.Status.DEAD,
                    attempts=5,
                    runs=5,
                    last_error="Transient: 503",
                    error_signature="5f3a9c0d1e2b4a67",
                    payload={"n": n},
                )
                for n in range(start, min(count, start + 10_000))
            )
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {Job._meta.db_table}")

    seed()
    started = time.perf_counter()
    Job.objects.filter(status=Job.Status.DEAD).update(status=Job.Status.PENDING, attempts=0)
    baseline = time.perf_counter() - started
    print(f"baseline: one UPDATE of {count} rows: {baseline:6.2f}s")

    seed()
    started = time.perf_counter()
    operation = start_retry_all(Actor.system("bench"), JobFilter())
    frozen = time.perf_counter() - started
    run_job(operation.job_id)  # what a worker does with the bulk job
    elapsed = time.perf_counter() - started
    operation.refresh_from_db()
    queued = OrmQ.objects.count() - 1  # the bulk job's own broker row stays: no worker ran it
    pending = Job.objects.filter(status=Job.Status.PENDING, job_type="jobs.noop").count()
    print(
        f"retry-all: froze {operation.total} ids in {frozen:5.2f}s; all queued after "
        f"{elapsed:6.2f}s ({count / elapsed:,.0f} jobs/s); operation {operation.status}, "
        f"{pending} pending, {queued} broker rows"
    )
    print(
        f"ratio (retry-all time / plain UPDATE time): {elapsed / baseline:.1f}; "
        f"target: all {count:,} queued in <= 30 s"
    )
    ok = pending == count and queued == count and elapsed <= 30
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
