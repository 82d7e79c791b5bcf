"""The dashboard's live-refresh fragment with a week of samples: render time and bytes per
chart range, as the console's test client sees them (a test database made for the run:
SQLite by default, PostgreSQL with DATABASE_URL). Prints figures; sets no target (a
fragment's weight is judged by reading them, before and after a change).

    .venv/bin/python bench/dashboard_charts/measure.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import time
from datetime import timedelta
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings_test")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

from portal.access.actors import Actor  # noqa: E402
from portal.alerts.models import MetricSample  # noqa: E402
from portal.audit.services import record  # noqa: E402
from portal.console.charts import RANGES  # noqa: E402


def a_week_of_samples() -> None:
    """Minute rows for the last day, 10-minute rows for the six before (as downsampling
    leaves them), and a few operator actions."""
    rng = random.Random(7)
    now = timezone.now()
    rows = [
        MetricSample(
            taken_at=now - timedelta(minutes=minute, seconds=10),
            queue_length=rng.randint(0, 300),
            dead=0,
            calls_ok=rng.randint(20, 40),
            calls_failed=rng.randint(0, 3),
            calls_throttled=rng.randint(0, 20),
        )
        for minute in range(24 * 60)
    ]
    rows += [
        MetricSample(
            taken_at=now - timedelta(days=7) + timedelta(minutes=10 * n),
            span_minutes=10,
            queue_length=rng.randint(0, 12),
            dead=0,
            calls_ok=rng.randint(200, 400),
            calls_failed=rng.randint(0, 10),
            calls_throttled=0,
        )
        for n in range(6 * 24 * 6)
    ]
    MetricSample.objects.bulk_create(rows)


def measure(client: Client, query: dict[str, str], repeat: int) -> tuple[float, str]:
    """The median time of `repeat` live-refresh requests (after one that warms the caches)
    and the last answer's HTML."""
    times, html = [], ""
    for _ in range(repeat + 1):
        started = time.perf_counter()
        response = client.get("/", query, HTTP_HX_REQUEST="true")
        times.append(1000 * (time.perf_counter() - started))
        assert response.status_code == 200, response.status_code
        html = response.content.decode()
    return statistics.median(times[1:]), html


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    setup_test_environment()
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        a_week_of_samples()
        admin = get_user_model().objects.create_user("bench-admin", password="x")
        admin.groups.add(Group.objects.get(name="admin"))
        actor = Actor(kind="user", name=admin.username, role="admin", user=admin)
        for action in ("jobs.pause", "jobs.resume", "inbox.pause", "inbox.resume"):
            record(action, actor=actor, target_type="job_queue")
        client = Client()
        client.force_login(admin)
        print(f"database: {connection.vendor}; {MetricSample.objects.count()} samples")
        print("drawn: the charts drawn (a range chosen, or the minute changed);")
        print("kept: a live refresh within the minute the page's charts were drawn")
        print(f"{'range':>5} {'drawn ms':>9} {'bytes':>9} {'kept ms':>8} {'bytes':>7}")
        for key in RANGES:
            drawn = measure(client, {"range": key}, args.repeat)
            refresh = re.search(r'<div id="health" hx-get="([^"]*)"', drawn[1]).group(1)
            query = {k: v[0] for k, v in parse_qs(urlsplit(unescape(refresh)).query).items()}
            kept = measure(client, query, args.repeat)
            print(
                f"{key:>5} {drawn[0]:>9.1f} {len(drawn[1]):>9,} {kept[0]:>8.1f} {len(kept[1]):>7,}"
            )
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0)


if __name__ == "__main__":
    main()
