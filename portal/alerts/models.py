from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Sum

from integrations.microsoft.models import GraphCallFigures


class Alert(models.Model):
    """One alert rule's current state; changes are kept in AlertEvent."""

    class State(models.TextChoices):
        OK = "ok"
        FIRING = "firing"

    rule = models.CharField(max_length=64, primary_key=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.OK)
    value = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    message = models.TextField(blank=True)
    firing_since = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.rule}: {self.state}"


class AlertEvent(models.Model):
    """A state change (firing, resolved) and whether people were told."""

    id = models.BigAutoField(primary_key=True)
    rule = models.CharField(max_length=64, db_index=True)
    state = models.CharField(max_length=8, choices=Alert.State.choices)
    value = models.FloatField(null=True, blank=True)
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    notified = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.rule} {self.state} at {self.created_at:%Y-%m-%d %H:%M}"


class AuditChainCheckQuerySet(models.QuerySet["AuditChainCheck"]):
    def latest_ok(self) -> bool | None:
        """Whether the latest verification passed; None before the first one."""
        return self.order_by("-id").values_list("ok", flat=True).first()


class AuditChainCheck(models.Model):
    """The hourly verification of the audit log's hash chain (metrics read the latest)."""

    id = models.BigAutoField(primary_key=True)
    checked_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ok = models.BooleanField()
    events = models.PositiveBigIntegerField()
    first_bad_event = models.BigIntegerField(null=True, blank=True)
    problem = models.TextField(blank=True)

    objects = AuditChainCheckQuerySet.as_manager()

    def __str__(self) -> str:
        return f"audit chain {'ok' if self.ok else 'BROKEN'} at {self.checked_at}"


class MetricSampleQuerySet(models.QuerySet["MetricSample"]):
    def graph_figures(self, since: datetime) -> GraphCallFigures:
        """Graph calls since `since` from the per-minute samples (1,440 rows a day, not
        millions of calls): the same success predicate, sampled by take_sample. Only
        totals are known."""
        row = self.filter(taken_at__gte=since).aggregate(
            ok=Sum("calls_ok"), failed=Sum("calls_failed"), throttled=Sum("calls_throttled")
        )
        ok, failed = row["ok"] or 0, row["failed"] or 0
        return GraphCallFigures(
            total=ok + failed,
            succeeded=ok,
            throttled=row["throttled"] or 0,
            server_errors=0,
            no_response=0,
            last_call_at=None,
            last_success_at=None,
        )


class MetricSample(models.Model):
    """A once-a-minute snapshot for the dashboard's 24-hour charts (kept
    METRIC_SAMPLE_RETENTION_DAYS)."""

    id = models.BigAutoField(primary_key=True)
    taken_at = models.DateTimeField(db_index=True)
    queue_length = models.PositiveIntegerField()
    dead = models.PositiveIntegerField()
    calls_ok = models.PositiveIntegerField()
    calls_failed = models.PositiveIntegerField()
    calls_throttled = models.PositiveIntegerField()

    objects = MetricSampleQuerySet.as_manager()

    def __str__(self) -> str:
        return f"sample at {self.taken_at:%H:%M}"
