"""The dashboard charts' samples after their first day: the samples of each 10 minutes become
one row, so a week of them stays small (the 7-day chart draws hours; nothing reads older
samples minute by minute).

The fold is one transaction per batch: the minute rows it read are locked, summed into their
10-minute row (created, or added to when an earlier run made it) and deleted together, so a
second run at the same time, or a run stopped half-way, neither loses nor counts a sample twice.
Retention (METRIC_SAMPLE_RETENTION_DAYS, the `retention.prune` schedule) deletes both kinds.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.utils import timezone

from portal.alerts.models import DOWNSAMPLED_MINUTES, FULL_RESOLUTION, MetricSample

BATCH_SIZE = 2000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SPAN = timedelta(minutes=DOWNSAMPLED_MINUTES)


def span_start(moment: datetime) -> datetime:
    """The start of the 10 minutes (counted in UTC) that `moment` falls in."""
    return moment - (moment - _EPOCH) % _SPAN


def downsample(now: datetime | None = None, *, batch_size: int = BATCH_SIZE) -> int:
    """Fold the minute samples of every 10 minutes that ended more than a day before `now`
    into one row. Returns how many minute samples were folded (0: nothing left to do)."""
    cutoff = span_start((now or timezone.now()) - FULL_RESOLUTION)
    folded = 0
    while True:
        done = _fold_batch(cutoff, batch_size)
        folded += done
        if done < batch_size:
            return folded


def _fold_batch(cutoff: datetime, batch_size: int) -> int:
    with transaction.atomic():
        minutes = list(
            MetricSample.objects.select_for_update()
            .filter(taken_at__lt=cutoff, span_minutes=1)
            .order_by("taken_at", "pk")[:batch_size]
        )
        if not minutes:
            return 0
        groups: dict[datetime, list[MetricSample]] = defaultdict(list)
        for sample in minutes:
            groups[span_start(sample.taken_at)].append(sample)
        existing = {
            row.taken_at: row
            for row in MetricSample.objects.select_for_update().filter(
                span_minutes=DOWNSAMPLED_MINUTES, taken_at__in=list(groups)
            )
        }
        for start, samples in groups.items():
            row = existing.get(start) or MetricSample(
                taken_at=start,
                span_minutes=DOWNSAMPLED_MINUTES,
                queue_length=0,
                dead=0,
                calls_ok=0,
                calls_failed=0,
                calls_throttled=0,
            )
            for sample in samples:
                row.calls_ok += sample.calls_ok
                row.calls_failed += sample.calls_failed
                row.calls_throttled += sample.calls_throttled
                row.queue_length = max(row.queue_length, sample.queue_length)
                row.dead = max(row.dead, sample.dead)
            row.save()
        MetricSample.objects.filter(pk__in=[sample.pk for sample in minutes]).delete()
    return len(minutes)
