from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import models
from django.db.models import F, Q, Sum

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


# Samples older than a day are folded into one row per 10 minutes (portal/alerts/samples.py):
# the 7-day chart needs no finer grain, and a week of samples stays ~2,300 rows, not ~10,000.
FULL_RESOLUTION = timedelta(days=1)
DOWNSAMPLED_MINUTES = 10


@dataclass(frozen=True)
class SampleBucket:
    """What the samples say about one stretch of time [start, start + width)."""

    start: datetime
    samples: int  # rows that fell in it (0: no sample, e.g. no worker ran)
    calls_ok: int
    calls_failed: int
    calls_throttled: int
    queue_peak: int | None  # the longest queue sampled in it (None: no sample)

    @property
    def calls(self) -> int:
        return self.calls_ok + self.calls_failed


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

    def buckets(self, start: datetime, width: timedelta, count: int) -> list[SampleBucket]:
        """`count` buckets of `width` from `start`: the calls summed and the queue's peak, the
        figures every chart draws. A row counts in the bucket its `taken_at` falls in (a
        downsampled row's `taken_at` is the start of the 10 minutes it stands for).

        Grouped here rather than in SQL: a 7-day window is ~2,300 rows, and the buckets line up
        with the viewer's time zone, which neither SQLite nor PostgreSQL's date_trunc can do
        for every zone (e.g. 10-minute buckets in UTC+05:45)."""
        end = start + width * count
        samples, ok, failed, throttled = ([0] * count for _ in range(4))
        peaks: list[int | None] = [None] * count
        rows = self.filter(taken_at__gte=start, taken_at__lt=end).values_list(
            "taken_at", "calls_ok", "calls_failed", "calls_throttled", "queue_length"
        )
        for taken_at, calls_ok, calls_failed, calls_throttled, queue in rows.order_by():
            n = (taken_at - start) // width
            samples[n] += 1
            ok[n] += calls_ok
            failed[n] += calls_failed
            throttled[n] += calls_throttled
            peak = peaks[n]
            peaks[n] = queue if peak is None else max(peak, queue)
        return [
            SampleBucket(start + width * n, samples[n], ok[n], failed[n], throttled[n], peaks[n])
            for n in range(count)
        ]


class MetricSample(models.Model):
    """A once-a-minute snapshot for the dashboard's charts (kept METRIC_SAMPLE_RETENTION_DAYS).

    After a day the samples of each 10 minutes become one row (`span_minutes` 10, `taken_at`
    the start of those 10 minutes): calls summed, the queue and dead letters at their peak."""

    id = models.BigAutoField(primary_key=True)
    taken_at = models.DateTimeField(db_index=True)
    queue_length = models.PositiveIntegerField()
    dead = models.PositiveIntegerField()
    calls_ok = models.PositiveIntegerField()
    calls_failed = models.PositiveIntegerField()
    calls_throttled = models.PositiveIntegerField()
    span_minutes = models.PositiveSmallIntegerField(default=1)

    objects = MetricSampleQuerySet.as_manager()

    def __str__(self) -> str:
        return f"sample at {self.taken_at:%H:%M}"


# Short names for the identity platform's refusals (AADSTS codes), for the Token tile, the
# Credentials page and the alert. Microsoft Learn: "Microsoft Entra authentication and
# authorization error codes".
REFUSAL_REASONS = {
    7000222: "expired",
    7000215: "invalid or deleted",
    700016: "app not in this tenant",
    90002: "tenant not found",
    7000218: "no secret sent",
    7000112: "app disabled",
    700027: "certificate not accepted",
    70011: "scope refused",
    1002012: "scope refused",
}
ERROR_REASONS = {
    "unreachable": "identity platform unreachable",
    "server_error": "identity platform failing",
    "temporarily_unavailable": "identity platform failing",
    "credential_mismatch": "belongs to another app registration",
    "invalid_tenant": "tenant not found",
}


class TokenHealthQuerySet(models.QuerySet["TokenHealth"]):
    def failing(self) -> TokenHealthQuerySet:
        """Credentials whose latest token request, in any process, was refused."""
        return self.filter(last_failure_at__isnull=False).filter(
            Q(last_success_at__isnull=True) | Q(last_failure_at__gt=F("last_success_at"))
        )

    def active_refusal(self) -> TokenHealth | None:
        """The active credential's health when its latest token request was refused."""
        return self.failing().filter(credential__state="active").first()


class TokenHealth(models.Model):
    """How the identity platform last answered for one credential, in any process: the
    latest token it issued and the latest refusal (with the AADSTS code). Tokens from MSAL's
    cache are not counted: they prove nothing about the credential now."""

    credential = models.OneToOneField(
        "microsoft.Credential", on_delete=models.CASCADE, primary_key=True
    )
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    failure_code = models.PositiveIntegerField(null=True, blank=True)  # AADSTS number
    failure_error = models.CharField(max_length=64, blank=True)  # OAuth error
    failure_message = models.TextField(blank=True)
    failure_process = models.CharField(max_length=150, blank=True)

    objects = TokenHealthQuerySet.as_manager()

    def __str__(self) -> str:
        return f"token health of credential #{self.pk}"

    @property
    def failing(self) -> bool:
        return self.last_failure_at is not None and (
            self.last_success_at is None or self.last_failure_at > self.last_success_at
        )

    @property
    def reason(self) -> str:
        """'expired (AADSTS7000222)', 'identity platform unreachable', …"""
        if self.failure_code:
            name = REFUSAL_REASONS.get(self.failure_code, "refused")
            return f"{name} (AADSTS{self.failure_code})"
        return ERROR_REASONS.get(self.failure_error, "refused")
