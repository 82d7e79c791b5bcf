"""The dashboard's 24-hour charts, drawn as plain SVG from the per-minute samples."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Max, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from portal.alerts.models import MetricSample

HOURS = 24


def _hourly() -> list[dict[str, Any]]:
    now = timezone.now()
    start = (now - timedelta(hours=HOURS - 1)).replace(minute=0, second=0, microsecond=0)
    rows = {
        row["hour"]: row
        for row in (
            MetricSample.objects.filter(taken_at__gte=start)
            .annotate(hour=TruncHour("taken_at"))
            .values("hour")
            .annotate(
                ok=Sum("calls_ok"),
                failed=Sum("calls_failed"),
                throttled=Sum("calls_throttled"),
                queue=Max("queue_length"),
            )
            .order_by()
        )
    }
    hours = []
    for n in range(HOURS):
        hour = start + timedelta(hours=n)
        row = rows.get(hour, {})
        hours.append(
            {
                "hour": hour,
                "ok": row.get("ok") or 0,
                "failed": row.get("failed") or 0,
                "throttled": row.get("throttled") or 0,
                "queue": row.get("queue"),
            }
        )
    return hours


def dashboard_charts() -> dict[str, Any]:
    """Bars with heights in percent of each chart's maximum, ready for the template."""
    hours = _hourly()
    calls_max = max((h["ok"] + h["failed"] for h in hours), default=0) or 1
    throttled_max = max((h["throttled"] for h in hours), default=0) or 1
    queue_max = max((h["queue"] or 0 for h in hours), default=0) or 1
    bars = []
    for index, h in enumerate(hours):
        ok = round(100 * h["ok"] / calls_max, 2)
        failed = round(100 * h["failed"] / calls_max, 2)
        throttled = round(100 * h["throttled"] / throttled_max, 2)
        queue = round(100 * (h["queue"] or 0) / queue_max, 2)
        # SVG's y grows downwards: each bar stands on the bottom edge (y = 100).
        bars.append(
            {
                "x": index * 10,
                "label": h["hour"],
                "ok": h["ok"],
                "failed": h["failed"],
                "throttled": h["throttled"],
                "queue": h["queue"],
                "ok_height": ok,
                "ok_y": round(100 - ok - failed, 2),
                "failed_height": failed,
                "failed_y": round(100 - failed, 2),
                "throttled_height": throttled,
                "throttled_y": round(100 - throttled, 2),
                "queue_height": queue,
                "queue_y": round(100 - queue, 2),
            }
        )
    return {
        "bars": bars,
        "calls_max": calls_max,
        "throttled_max": throttled_max,
        "queue_max": queue_max,
        "has_data": any(h["queue"] is not None for h in hours),
    }
