"""The charts' samples: grouped into buckets, folded to 10 minutes after a day, kept 8 days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from portal.alerts.models import MetricSample
from portal.alerts.samples import downsample, span_start
from portal.jobs.retention import RETENTIONS, prune

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 7, 14, 3, 20, tzinfo=UTC)


def sample(at: datetime, ok: int = 1, failed: int = 0, throttled: int = 0, queue: int = 0):
    return MetricSample.objects.create(
        taken_at=at,
        queue_length=queue,
        dead=queue // 10,
        calls_ok=ok,
        calls_failed=failed,
        calls_throttled=throttled,
    )


def test_buckets_sum_the_calls_and_keep_the_queues_peak():
    start = datetime(2026, 12, 7, 13, 0, tzinfo=UTC)
    sample(start + timedelta(seconds=5), ok=3, failed=1, throttled=1, queue=7)
    sample(start + timedelta(seconds=59), ok=2, queue=4)  # same minute: a sample taken twice
    sample(start + timedelta(minutes=2, seconds=30), ok=9, queue=0)
    sample(start - timedelta(seconds=1), ok=100)  # before the window
    sample(start + timedelta(minutes=3), ok=100)  # exactly at its end: the next bucket's

    buckets = MetricSample.objects.buckets(start, timedelta(minutes=1), 3)

    assert [b.start for b in buckets] == [start + timedelta(minutes=n) for n in range(3)]
    first, empty, last = buckets
    assert (first.samples, first.calls_ok, first.calls_failed, first.calls_throttled) == (
        2,
        5,
        1,
        1,
    )
    assert first.queue_peak == 7 and first.calls == 6
    assert (empty.samples, empty.calls, empty.queue_peak) == (0, 0, None)  # no sample ≠ zero
    assert (last.samples, last.calls_ok, last.queue_peak) == (1, 9, 0)


def test_samples_older_than_a_day_are_folded_into_ten_minute_rows():
    day_ago = NOW - timedelta(days=1)
    old_span = span_start(day_ago) - timedelta(minutes=10)  # ended before the cut-off
    for minute in range(10):
        sample(old_span + timedelta(minutes=minute, seconds=20), ok=2, failed=1, queue=minute)
    straddling = span_start(day_ago)  # the 10 minutes the cut-off falls in stay as they are
    recent = [sample(straddling + timedelta(seconds=30)), sample(NOW - timedelta(minutes=1))]

    assert downsample(NOW) == 10

    folded = MetricSample.objects.get(span_minutes=10)
    assert folded.taken_at == old_span
    assert (folded.calls_ok, folded.calls_failed, folded.queue_length) == (20, 10, 9)
    assert folded.dead == 0  # the peak of 9 // 10 for every sample
    assert set(MetricSample.objects.filter(span_minutes=1)) == set(recent)
    # What the charts read is the same before and after: 10 minutes hold the same calls.
    (bucket,) = MetricSample.objects.buckets(old_span, timedelta(minutes=10), 1)
    assert (bucket.calls_ok, bucket.calls_failed, bucket.queue_peak) == (20, 10, 9)


def test_folding_twice_changes_nothing_and_a_late_run_adds_to_the_ten_minute_row():
    span = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    sample(span + timedelta(minutes=1), ok=5, queue=3)
    assert downsample(NOW) == 1
    assert downsample(NOW) == 0  # safe twice
    # A minute row of the same 10 minutes that appears later (a sample written by a worker
    # that was behind) is added to the row, not made a second one.
    sample(span + timedelta(minutes=7), ok=4, queue=8)
    assert downsample(NOW) == 1
    row = MetricSample.objects.get()
    assert (row.span_minutes, row.taken_at, row.calls_ok, row.queue_length) == (10, span, 9, 8)


def test_folding_walks_in_batches():
    start = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    for minute in range(35):
        sample(start + timedelta(minutes=minute))
    assert downsample(NOW, batch_size=7) == 35
    assert list(
        MetricSample.objects.order_by("taken_at").values_list("span_minutes", "calls_ok")
    ) == [(10, 10), (10, 10), (10, 10), (10, 5)]


def test_a_week_of_samples_is_kept_for_the_seven_day_chart(settings):
    assert settings.METRIC_SAMPLE_RETENTION_DAYS >= 7
    retention = RETENTIONS["alerts.MetricSample"]
    old = datetime.now(UTC) - timedelta(days=settings.METRIC_SAMPLE_RETENTION_DAYS, minutes=20)
    kept = sample(datetime.now(UTC) - timedelta(days=7, minutes=10))
    sample(old)
    assert prune(retention) == 1
    assert list(MetricSample.objects.all()) == [kept]


def test_span_start_counts_ten_minutes_in_utc():
    assert span_start(datetime(2026, 3, 29, 1, 59, 59, tzinfo=UTC)) == datetime(
        2026, 3, 29, 1, 50, tzinfo=UTC
    )
    assert span_start(datetime(2026, 3, 29, 2, 0, tzinfo=UTC)) == datetime(
        2026, 3, 29, 2, 0, tzinfo=UTC
    )
