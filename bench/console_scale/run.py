"""Console list pages on a production-sized PostgreSQL database.

    python manage.py seed_scale --confirm       # once, on BENCH_SCALE_DATABASE_URL
    python bench/console_scale/run.py [--quick]

For every list page and HTMX partial: p50 and p95 over repeated requests (in-process, Django
test client, signed in as an admin with a password and an authenticator code, as a person
signs in: the production settings require the second step), beside the time of that page's
main query alone.
Target: p95 < 300 ms per page. Also fails if any page runs an exact COUNT(*) over a big table.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import bench_env, setup_django, signed_in_client

BIG_TABLES = (
    "jobs_job",
    "audit_auditevent",
    "microsoft_graphcall",
    "microsoft_subscription",
    "microsoft_syncstate",
    "jobs_jobattempt",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 requests per page, not 20")
    args = parser.parse_args()
    repeats = 5 if args.quick else 20
    env = bench_env(
        DATABASE_URL=os.environ.get(
            "BENCH_SCALE_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fleet_scale"
        ),
        ALLOWED_HOSTS="testserver",
    )
    setup_django(env)
    from django.db import connection

    counts = {table: _estimate(connection, table) for table in BIG_TABLES}
    print("rows (planner estimates): " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    client = signed_in_client("bench-admin", "admin")
    worst, counted = measure(client, console_pages(), repeats)
    print(f"worst p95: {worst:.1f} ms (target < 300 ms)")
    return 0 if worst < 300 and not counted else 1


def console_pages() -> list[tuple[str, str | None, bool, Callable[[], object]]]:
    """(label, URL, HTMX partial?, the page's main query alone) for every list page and
    partial, with ids of rows that exist in the database."""
    from django.urls import NoReverseMatch, reverse

    from integrations.microsoft.models import GraphCall, MonitoredUser, Subscription
    from portal.audit.models import AuditEvent
    from portal.jobs.models import Job
    from portal.jobs.stats import state_counts

    some_user = MonitoredUser.objects.order_by("id").values_list("id", flat=True).first()
    some_job = Job.objects.filter(status="dead").values_list("id", flat=True).first()
    some_request_id = (
        GraphCall.objects.exclude(request_id="").values_list("request_id", flat=True).first()
        or "no-such-request-id"
    )
    some_target = (
        AuditEvent.objects.exclude(target_id="").values_list("target_id", flat=True).first() or "x"
    )

    def url(name: str, *args_: object, query: str = "") -> str | None:
        try:
            return reverse(name, args=args_) + (f"?{query}" if query else "")
        except NoReverseMatch:
            return None

    pages = [
        ("dashboard", url("console:dashboard"), False, lambda: state_counts()),
        (
            "jobs: dead",
            url("console:jobs", query="status=dead"),
            False,
            lambda: list(Job.objects.filter(status="dead").order_by("-id")[:51]),
        ),
        (
            "jobs: succeeded",
            url("console:jobs", query="status=succeeded"),
            False,
            lambda: list(Job.objects.filter(status="succeeded").order_by("-id")[:51]),
        ),
        (
            "jobs: table partial",
            url("console:jobs", query="status=dead&signature=a1b2c3d4e5f60718"),
            True,
            lambda: list(
                Job.objects.filter(status="dead", error_signature="a1b2c3d4e5f60718").order_by(
                    "-id"
                )[:51]
            ),
        ),
        (
            "job detail",
            url("console:job_detail", some_job) if some_job else None,
            False,
            lambda: Job.objects.get(pk=some_job),
        ),
        (
            "audit log",
            url("console:audit"),
            False,
            lambda: list(AuditEvent.objects.order_by("-id")[:51]),
        ),
        (
            "audit: filtered partial",
            url("console:audit", query="action=job.retry&outcome=denied"),
            True,
            lambda: list(
                AuditEvent.objects.filter(
                    action__startswith="job.retry", outcome="denied"
                ).order_by("-id")[:51]
            ),
        ),
        (
            "graph calls",
            url("console:graph_calls"),
            False,
            lambda: list(GraphCall.objects.order_by("-created_at")[:51]),
        ),
        (
            "subscriptions",
            url("console:subscriptions"),
            False,
            lambda: list(Subscription.objects.order_by("expiration")[:51]),
        ),
        (
            "users & sync",
            url("console:sync_users"),
            False,
            lambda: list(MonitoredUser.objects.order_by("id")[:51]),
        ),
        (
            "user detail",
            url("console:sync_user", some_user) if some_user else None,
            False,
            lambda: MonitoredUser.objects.get(pk=some_user),
        ),
        ("alerts", url("console:alerts"), False, lambda: None),
        # The search box: a job id (several kinds answer to a number), a Graph request-id, a
        # UPN's start, an audit target id.
        ("search: id", url("console:search", query=f"q={some_job}&list=1"), False, lambda: None),
        (
            "search: request-id",
            url("console:search", query=f"q={some_request_id}&list=1"),
            False,
            lambda: list(GraphCall.objects.filter(request_id=some_request_id)[:10]),
        ),
        ("search: UPN", url("console:search", query="q=scale12&list=1"), False, lambda: None),
        (
            "search: audit target",
            url("console:search", query=f"q={some_target}&list=1"),
            False,
            lambda: list(AuditEvent.objects.filter(target_id=some_target)[:10]),
        ),
    ]
    return pages


def measure(
    client: object, pages: list[tuple[str, str | None, bool, Callable[[], object]]], repeats: int
) -> tuple[float, list[tuple[str, str]]]:
    """Request every page `repeats` times (after one to warm caches) and print p50, p95, the
    main query's time alone and the number of queries; returns the worst p95 (ms) and any
    exact COUNT(*) over a big table. A page that does not answer 200 counts as 10 s."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    worst = 0.0
    counted: list[tuple[str, str]] = []
    print(f"{'page':<26}{'p50 ms':>9}{'p95 ms':>9}{'query ms':>10}  queries")
    for label, path, htmx, query in pages:
        if path is None:
            print(f"{label:<26} (page not present)")
            continue
        headers = {"HX-Request": "true"} if htmx else {}
        timings = []
        for n in range(repeats + 1):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.get(path, headers=headers)  # type: ignore[attr-defined]
                elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                print(f"{label:<26} HTTP {response.status_code}")
                worst = max(worst, 10_000.0)
                break
            if n:  # the first request warms caches
                timings.append(elapsed)
        else:
            for q in captured.captured_queries:
                sql = q["sql"]
                if (
                    re.search(r"COUNT\(\*\)", sql)
                    and any(t in sql for t in BIG_TABLES)
                    and " WHERE " not in sql
                ):
                    counted.append((label, sql[:160]))
            query_times = []
            for _ in range(repeats):
                started = time.perf_counter()
                query()
                query_times.append((time.perf_counter() - started) * 1000)
            p50 = statistics.median(timings)
            p95 = sorted(timings)[max(0, int(len(timings) * 0.95) - 1)]
            worst = max(worst, p95)
            print(
                f"{label:<26}{p50:9.1f}{p95:9.1f}{statistics.median(query_times):10.1f}"
                f"  {len(captured.captured_queries)}"
            )
    for label, sql in counted:
        print(f"exact COUNT(*) over a big table on {label}: {sql}")
    return worst, counted


def _estimate(connection, table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [table])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


if __name__ == "__main__":
    sys.exit(main())
