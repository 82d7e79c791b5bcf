"""The dashboard's charts: Graph calls, 429 answers and the queue over a chosen range (1 h and
6 h per minute, 24 h per 10 minutes, 7 days per hour), with time ticks in the viewer's time
zone and the operators' actions marked, so the cause and the fix of an incident show on one
picture.

The figures come from `MetricSample.objects.buckets` and `AuditEvent.objects.operator_actions`;
this module only places them. The SVG is drawn in percentages of its own box (no viewBox), so
bars stretch with the width while the tick labels keep their font size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from portal.alerts.models import MetricSample, SampleBucket
from portal.audit.actions import action_words
from portal.audit.models import AuditEvent
from portal.console import audit_targets

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ChartRange:
    key: str  # in the URL: ?range=6h
    label: str  # on the range choice
    words: str  # "the last 6 hours"
    span: timedelta
    bucket: timedelta
    per: str  # "per minute"


RANGES = {
    r.key: r
    for r in (
        ChartRange(
            "1h", "1 h", "the last hour", timedelta(hours=1), timedelta(minutes=1), "minute"
        ),
        ChartRange(
            "6h", "6 h", "the last 6 hours", timedelta(hours=6), timedelta(minutes=1), "minute"
        ),
        ChartRange(
            "24h",
            "24 h",
            "the last 24 hours",
            timedelta(hours=24),
            timedelta(minutes=10),
            "10 minutes",
        ),
        ChartRange("7d", "7 d", "the last 7 days", timedelta(days=7), timedelta(hours=1), "hour"),
    )
}
# An incident of the last hours shows minute by minute without a click.
DEFAULT_RANGE = "6h"
# Operator actions drawn on one chart (the newest); the list under the charts says how many more.
MAX_MARKERS = 40
# Tick spacings to choose from, the finest that gives at most MAX_TICKS labels.
TICK_SPACINGS = [timedelta(minutes=m) for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)]
MAX_TICKS = 8
# Ticks this close to the right end would run into its "now" label.
NOW_LABEL_ROOM = 0.09


def chart_range(key: str | None) -> ChartRange:
    """The range `?range=` names; the default for a missing or unknown one."""
    return RANGES.get(key or "", RANGES[DEFAULT_RANGE])


def bucket_start(moment: datetime, width: timedelta, zone: tzinfo) -> datetime:
    """The start of the bucket `moment` falls in, buckets lined up with the wall clock in
    `zone` (10-minute buckets start at :00, :10… there even at UTC+05:45). Every bucket is
    `width` long in real time: a DST change makes no 23- or 25-hour bucket."""
    offset = moment.astimezone(zone).utcoffset() or timedelta(0)
    return moment - (moment + offset - _EPOCH) % width


@dataclass(frozen=True)
class Tick:
    at: datetime
    position: float  # 0..100, percent of the chart's width
    label: str
    anchor: str  # SVG text-anchor: "start" near the left end, else "middle"


def tick_spacing(span: timedelta) -> timedelta:
    return next((s for s in TICK_SPACINGS if span / s <= MAX_TICKS), TICK_SPACINGS[-1])


def _wall_clock_instants(day: date, spacing: timedelta, zone: tzinfo) -> list[datetime]:
    """The instants of `day` whose time in `zone` is a multiple of `spacing` past midnight:
    a time skipped by a DST change is left out, one read twice is there twice."""
    instants = []
    steps = max(1, int(timedelta(days=1) / spacing))
    for step in range(steps):
        wall = datetime.combine(day, time()) + spacing * step
        for fold in (0, 1):
            local = wall.replace(tzinfo=zone, fold=fold)
            instant = local.astimezone(UTC)
            if instant.astimezone(zone).replace(tzinfo=None) != wall:
                continue  # skipped when the clocks went forward
            if fold and local.utcoffset() == wall.replace(tzinfo=zone).utcoffset():
                continue  # read once: fold 1 is the same instant
            instants.append(instant)
    return instants


def time_ticks(start: datetime, end: datetime, zone: tzinfo) -> list[Tick]:
    """Ticks at round times of the viewer's wall clock between `start` and `end`: labelled
    "14:00", or "Tue 8" at midnight; at a DST change the label names the zone
    ("02:00 CET"), since that hour is read twice (or not at all)."""
    span = end - start
    spacing = tick_spacing(span)
    day = start.astimezone(zone).date() - timedelta(days=1)
    last_day = end.astimezone(zone).date()
    instants: list[datetime] = []
    while day <= last_day:
        instants += [i for i in _wall_clock_instants(day, spacing, zone) if start <= i <= end]
        day += timedelta(days=1)
    ticks = []
    previous_offset = start.astimezone(zone).utcoffset()
    for instant in sorted(set(instants)):
        local = instant.astimezone(zone)
        position = 100 * ((instant - start) / span)
        if position > 100 * (1 - NOW_LABEL_ROOM):
            continue
        if local.hour == 0 and local.minute == 0:
            label = f"{local:%a} {local.day}"  # short: seven of them fit a phone's chart
        else:
            label = f"{local:%H:%M}"
        if local.utcoffset() != previous_offset:
            label = f"{label} {local.tzname()}"
            previous_offset = local.utcoffset()
        ticks.append(
            Tick(instant, round(position, 3), label, "start" if position < 4 else "middle")
        )
    return ticks


def nice_ceiling(value: float) -> int:
    """The scale's top: 1, 2 or 5 times a power of ten, at least `value` (1 for nothing)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(int(m * power) for m in (1, 2, 5, 10) if m * power >= value)


@dataclass(frozen=True)
class Bar:
    bucket: SampleBucket
    x: float  # percent of the width
    width: float
    label: str  # the bucket's time, e.g. "14:32" or "Tue 8 Dec 14:00"
    in_progress: bool  # the current bucket: not over yet
    ok_y: float
    ok_height: float
    failed_y: float
    failed_height: float
    throttled_y: float
    throttled_height: float
    queue_y: float
    queue_height: float


def _height(value: float, top: int) -> float:
    return round(100 * value / top, 2)


def _bucket_label(moment: datetime, chart: ChartRange, zone: tzinfo, today: date) -> str:
    local = moment.astimezone(zone)
    if chart.span <= timedelta(hours=24) and local.date() == today:
        return f"{local:%H:%M}"
    return f"{local:%a} {local.day} {local:%b} {local:%H:%M}"


# The bars' own coordinate system (a nested SVG stretched to the plot with
# preserveAspectRatio="none"): whole numbers that are fine enough for any screen (1/10,000 of
# the width, 1/1,000 of the height) and short to send.
PATH_WIDTH = 10_000
PATH_HEIGHT = 1_000


def _bar_path(rects: list[tuple[float, float, float, float]]) -> str:
    """One SVG path of bars: each (x, width, y, height) in percent of the plot, drawn as a
    closed sub-path from its bottom-left corner, moving relatively from the previous one
    (a bar is ~15 characters, not a ~90-character <rect>)."""
    parts: list[str] = []
    previous = (0, 0)
    for x, width, y, height in rects:
        left = round(x * PATH_WIDTH / 100)
        bottom = round((y + height) * PATH_HEIGHT / 100)
        tall = round(height * PATH_HEIGHT / 100)
        wide = max(1, round(width * PATH_WIDTH / 100))
        if not tall:
            continue  # nothing to see; the summary still counts it
        move = "M" if not parts else "m"
        dx, dy = (left, bottom) if not parts else (left - previous[0], bottom - previous[1])
        parts.append(f"{move}{dx} {dy}h{wide}v-{tall}h-{wide}z")
        previous = (left, bottom)  # "z" returns to the sub-path's start
    return "".join(parts)


def bar_paths(bars: list[Bar]) -> dict[str, str]:
    """Each series' bars as one path (`d` attribute), by CSS class: three charts of 360 bars
    were 1,080 elements and ~170 KB on every live refresh; four paths are a fraction of
    that. A bucket with no sample draws nothing (no sample is not zero); the figures are
    in the summary under each picture."""
    sampled = [bar for bar in bars if bar.bucket.samples]
    return {
        "ok": _bar_path([(b.x, b.width, b.ok_y, b.ok_height) for b in sampled]),
        "failed": _bar_path([(b.x, b.width, b.failed_y, b.failed_height) for b in sampled]),
        "warn": _bar_path([(b.x, b.width, b.throttled_y, b.throttled_height) for b in sampled]),
        "queue": _bar_path([(b.x, b.width, b.queue_y, b.queue_height) for b in sampled]),
    }


def _bars(
    buckets: list[SampleBucket], chart: ChartRange, start: datetime, now: datetime, zone: tzinfo
) -> tuple[list[Bar], dict[str, int]]:
    tops = {
        "calls": nice_ceiling(max((b.calls for b in buckets), default=0)),
        "throttled": nice_ceiling(max((b.calls_throttled for b in buckets), default=0)),
        "queue": nice_ceiling(max((b.queue_peak or 0 for b in buckets), default=0)),
    }
    bars = []
    today = now.astimezone(zone).date()
    for bucket in buckets:
        end = min(bucket.start + chart.bucket, now)
        x = 100 * ((bucket.start - start) / chart.span)
        full = 100 * ((end - bucket.start) / chart.span)
        ok = _height(bucket.calls_ok, tops["calls"])
        failed = _height(bucket.calls_failed, tops["calls"])
        throttled = _height(bucket.calls_throttled, tops["throttled"])
        queue = _height(bucket.queue_peak or 0, tops["queue"])
        # SVG's y grows downwards: each bar stands on the bottom edge (y = 100 %).
        bars.append(
            Bar(
                bucket=bucket,
                x=round(x, 2),
                width=round(full * 0.8 if full > 0.5 else full, 2),  # a gap where there is room
                label=_bucket_label(bucket.start, chart, zone, today),
                in_progress=bucket.start + chart.bucket > now,
                ok_y=round(100 - ok - failed, 2),
                ok_height=ok,
                failed_y=round(100 - failed, 2),
                failed_height=failed,
                throttled_y=round(100 - throttled, 2),
                throttled_height=throttled,
                queue_y=round(100 - queue, 2),
                queue_height=queue,
            )
        )
    return bars, tops


def _markers(
    start: datetime, now: datetime, span: timedelta, zone: tzinfo, viewer: Any
) -> tuple[list[dict[str, Any]], int]:
    """The operator actions in the window, newest MAX_MARKERS, each linked to its audit row;
    none for someone who may not read the audit log."""
    if not viewer.has_perm("access.view_audit"):
        return [], 0
    actions = AuditEvent.objects.operator_actions(start, now)
    total = actions.count()
    events = list(actions.reverse()[:MAX_MARKERS])[::-1]
    audit_targets.describe(events, viewer)
    audit_url = reverse("console:audit")
    markers = []
    for event in events:
        local = event.created_at.astimezone(zone)
        who = f"{event.actor_name} ({event.actor_role})" if event.actor_role else event.actor_name
        what = action_words(event.action)
        # "paused the job queue", not "…: job queue (none named)": no target, no words for it.
        target = getattr(event, "target_label", "") if event.target_id else ""
        markers.append(
            {
                "id": event.pk,
                "x": round(100 * ((event.created_at - start) / span), 3),
                "at": event.created_at,
                "time": f"{local:%H:%M}" if span <= timedelta(hours=24) else f"{local:%a %H:%M}",
                "who": who,
                "what": f"{what}: {target}" if target else what,
                "href": f"{audit_url}?before={event.pk + 1}#audit-event-{event.pk}",
            }
        )
    return markers, total


def _summary(
    buckets: list[SampleBucket], chart: ChartRange, zone: tzinfo, today: date
) -> dict[str, Any]:
    """The text beside each picture: totals and the worst bucket, for everyone who cannot
    see the bars."""
    sampled = [b for b in buckets if b.samples]
    busiest = max(sampled, key=lambda b: b.calls, default=None)
    most_429 = max(sampled, key=lambda b: b.calls_throttled, default=None)
    longest = max(sampled, key=lambda b: b.queue_peak or 0, default=None)
    return {
        "ok": sum(b.calls_ok for b in buckets),
        "failed": sum(b.calls_failed for b in buckets),
        "throttled": sum(b.calls_throttled for b in buckets),
        "busiest": busiest if busiest and busiest.calls else None,
        "busiest_label": _bucket_label(busiest.start, chart, zone, today) if busiest else "",
        "most_429": most_429 if most_429 and most_429.calls_throttled else None,
        "most_429_label": _bucket_label(most_429.start, chart, zone, today) if most_429 else "",
        "longest": longest,
        "longest_label": _bucket_label(longest.start, chart, zone, today) if longest else "",
        "sampled": len(sampled),
    }


def charts_url(chart: ChartRange) -> str:
    """The dashboard's own URL with this range: its live refresh keeps the chosen range."""
    return reverse("console:dashboard") + (
        "" if chart.key == DEFAULT_RANGE else f"?range={chart.key}"
    )


def refresh_url(chart: ChartRange, stamp: str) -> str:
    """The live refresh's URL: the range, and the stamp of the charts the page shows (in the
    URL, not hx-vals, which htmx would add to the range links inside the refreshed part)."""
    url = charts_url(chart)
    return f"{url}{'&' if '?' in url else '?'}{urlencode({'drawn': stamp})}"


def drawn_stamp(chart: ChartRange, now: datetime, zone: tzinfo) -> str:
    """What the charts were drawn from: the range, the viewer's zone, the minute and the
    newest sample. The live refresh sends it back; while it matches, the page keeps the
    charts it has (they change once a minute, the tiles every refresh)."""
    newest = MetricSample.objects.order_by("-pk").values_list("pk", flat=True).first()
    return f"{chart.key} {zone} {now:%Y-%m-%dT%H:%M} {newest or 0}"


def unchanged_charts(
    range_key: str | None, drawn: str | None, now: datetime, zone: tzinfo | None = None
) -> dict[str, Any] | None:
    """What the charts partial needs to tell the page to keep its charts, when `drawn` (the
    stamp of the charts it shows) is still current; None when they must be drawn anew."""
    chart = chart_range(range_key)
    stamp = drawn_stamp(chart, now, zone or timezone.get_current_timezone())
    if drawn != stamp:
        return None
    return {"range": chart, "refresh_url": refresh_url(chart, stamp), "kept": True}


def dashboard_charts(
    range_key: str | None, viewer: Any, now: datetime | None = None, zone: tzinfo | None = None
) -> dict[str, Any]:
    """Everything the dashboard's charts partial draws, for the range `range_key` names, in
    the viewer's time zone (the active one unless `zone` is given)."""
    chart = chart_range(range_key)
    now = now or timezone.now()
    zone = zone or timezone.get_current_timezone()
    start = now - chart.span
    # Whole buckets only: the first starts at or after the window's start (a sliver at the
    # left end stays empty rather than show a bucket's calls in a fraction of its width);
    # the last is the current one, drawn up to now.
    first = bucket_start(start, chart.bucket, zone)
    if first < start:
        first += chart.bucket
    count = max(1, -((first - now) // chart.bucket))  # up to the one now falls in
    buckets = MetricSample.objects.buckets(first, chart.bucket, count)
    bars, tops = _bars(buckets, chart, start, now, zone)
    markers, actions_total = _markers(start, now, chart.span, zone, viewer)
    local_now = now.astimezone(zone)
    kept_days = settings.METRIC_SAMPLE_RETENTION_DAYS
    return {
        "range": chart,
        "url": charts_url(chart),
        "choices": list(RANGES.values()),
        "bars": bars,
        "tops": tops,
        "ticks": time_ticks(start, now, zone),
        "markers": markers,
        "actions_total": actions_total,
        "paths": bar_paths(bars),
        "refresh_url": refresh_url(chart, drawn_stamp(chart, now, zone)),
        "summary": _summary(buckets, chart, zone, local_now.date()),
        "has_data": any(b.samples for b in buckets),
        "zone_name": local_now.tzname(),
        "zone_key": str(zone),
        "start": start,
        "now": now,
        "not_kept": chart.span > timedelta(days=kept_days),
        "kept_days": kept_days,
    }
