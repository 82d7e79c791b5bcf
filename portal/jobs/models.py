from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Count, Min, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from portal.lib.tracing import trace_id


class JobQuerySet(models.QuerySet["Job"]):
    """The queue's figures, one definition each (the dashboard, /api/metrics/queue, the
    alerts, /metrics and verify_integration read them: tests/portal/test_figures.py)."""

    def due(self, now: datetime | None = None) -> JobQuerySet:
        """The queue: work that is due and not started. A job waiting for its time (an
        interval sync's spread slot, a delayed job) or for its retry's back-off is not due
        yet; a retry whose back-off is over is, until a worker takes it. Jobs of a paused
        type count: they are due, held by an operator."""
        now = now or timezone.now()
        return self.filter(
            Q(status=Job.Status.PENDING, next_attempt_at__isnull=True)
            | Q(status__in=WAITING_STATES, next_attempt_at__lte=now)
        )

    def dead(self) -> JobQuerySet:
        """The dead-letter queue."""
        return self.filter(status=Job.Status.DEAD)

    def queue_length(self) -> int:
        """How many jobs are due and not started (`due`)."""
        return self.due().count()

    def oldest_due_seconds(self) -> float | None:
        """How long the longest-waiting due job has been due (None: nothing due): since its
        time came (`next_attempt_at`), or since it was queued when it never had to wait."""
        now = timezone.now()
        since = (
            self.due(now)
            .aggregate(since=Min(Coalesce("next_attempt_at", "created_at")))
            .get("since")
        )
        return None if since is None else max(0.0, (now - since).total_seconds())

    def dead_letters(self) -> int:
        return self.dead().count()

    def active_counts(self) -> dict[str, int]:
        """Jobs by state, succeeded left out (most of the table, and nobody acts on it)."""
        counts = dict(
            self.filter(status__in=ACTIVE_STATES)
            .values_list("status")
            .annotate(n=Count("id"))
            .order_by()
        )
        return {state: counts.get(state, 0) for state in ACTIVE_STATES}

    def active_counts_by_type(self) -> dict[str, dict[str, int]]:
        """The same, per job type: {job_type: {state: n}} (states without jobs left out)."""
        by_type: dict[str, dict[str, int]] = {}
        for job_type, status, n in (
            self.filter(status__in=ACTIVE_STATES)
            .values_list("job_type", "status")
            .annotate(n=Count("id"))
            .order_by()
        ):
            by_type.setdefault(job_type, {})[status] = n
        return by_type


class Job(models.Model):
    """A unit of durable work. This table, not django-q2, is the source of truth for its state.

    django-q2 only executes: each dispatch puts a `run_job(id)` task on its broker. Attempts are
    counted when a run starts, so a job that kills its worker cannot loop forever.
    """

    class Status(models.TextChoices):
        PENDING = "pending"  # ready to run (dispatched, or waiting for its type to resume)
        RUNNING = "running"
        RETRYING = "retrying"  # failed, waiting for next_attempt_at
        SUCCEEDED = "succeeded"
        DEAD = "dead"  # out of attempts or permanently failed: the dead-letter queue
        CANCELLED = "cancelled"  # discarded by an operator

    id = models.BigAutoField(primary_key=True)
    job_type = models.CharField(max_length=64)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Runs in the current cycle")
    runs = models.PositiveIntegerField(default=0, help_text="Runs ever, across manual retries")
    max_attempts = models.PositiveIntegerField(default=5)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=128, blank=True)
    last_error = models.TextField(blank=True)
    error_class = models.CharField(max_length=128, blank=True)
    error_signature = models.CharField(max_length=16, blank=True)
    result = models.JSONField(null=True, blank=True)
    # NULL, not "", when absent: the unique constraint covers only jobs that have a key.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    created_by = models.CharField(max_length=150, blank=True)
    # Who last retried it by hand: the re-run acts (and is audited) in their name.
    retried_by = models.CharField(max_length=150, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)
    # The W3C traceparent of the span that queued it: its run continues that trace
    # (portal/lib/tracing.py); "" when tracing is off.
    trace_context = models.CharField(max_length=55, blank=True, default="", db_default="")

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        # Every state change rewrites the row and its index entries, so indexes are few and
        # partial where they serve one state: this table's write rate is the queue's speed.
        indexes = [
            # Lists and counts by state, newest first (type filters ride along).
            models.Index(fields=["status", "id"], name="job_status_id_idx"),
            models.Index(
                fields=["next_attempt_at"],
                name="job_waiting_idx",
                condition=Q(status__in=["retrying", "pending"]),
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="job_running_lease_idx",
                condition=Q(status="running"),
            ),
            models.Index(
                fields=["error_signature"],
                name="job_failed_signature_idx",
                condition=Q(status__in=["dead", "retrying"]),
            ),
            models.Index(
                fields=["correlation_id"],
                name="job_correlation_idx",
                condition=~Q(correlation_id=""),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"],
                name="job_idempotency_key_unique",
                condition=Q(idempotency_key__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"Job #{self.pk} {self.job_type} ({self.status})"

    @property
    def trace_id(self) -> str:
        """The trace its run belongs to (the console shows it); "" when not traced."""
        return trace_id(self.trace_context)


WAITING_STATES = (Job.Status.PENDING, Job.Status.RETRYING)
ACTIVE_STATES = [state for state in Job.Status.values if state != Job.Status.SUCCEEDED]


class JobAttempt(models.Model):
    """One finished run of a job (the run in progress is on the Job row itself)."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        LOST = "lost"  # the worker died or the task timed out; found by the watchdog

    id = models.BigAutoField(primary_key=True)
    # No index of its own: the (job, number) unique constraint serves lookups by job.
    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, related_name="attempt_log", db_index=False
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    worker = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["job_id", "number"]
        # Attempt rows are written once and never updated, so this index costs one insert.
        indexes = [models.Index(fields=["finished_at"], name="job_attempt_finished_idx")]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="job_attempt_unique_number"),
        ]

    def __str__(self) -> str:
        return f"Attempt {self.number} of job #{self.job_id} ({self.outcome})"


class PausedJobType(models.Model):
    """While a row exists, jobs of that type wait (pending) instead of running."""

    job_type = models.CharField(max_length=64, primary_key=True)
    paused_at = models.DateTimeField(auto_now_add=True)
    paused_by = models.CharField(max_length=150)
    reason = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"{self.job_type} paused by {self.paused_by}"


class BulkOperation(models.Model):
    """A bulk action over a frozen set of targets (retry all dead jobs, renew expiring
    subscriptions…), run as a job in chunks: resumable, cancellable, with progress."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        CANCELLED = "cancelled"
        FAILED = "failed"

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=32)
    filters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.processed}/{self.total})"

    @property
    def progress_percent(self) -> int:
        return 100 if not self.total else int(100 * self.processed / self.total)


class BulkOperationItem(models.Model):
    """One target of a bulk operation, frozen when the operation starts, with its result."""

    class Result(models.TextChoices):
        WAITING = "waiting"
        DONE = "done"
        SKIPPED = "skipped"  # its state changed since the preview (e.g. already retried)
        FAILED = "failed"

    id = models.BigAutoField(primary_key=True)
    operation = models.ForeignKey(BulkOperation, on_delete=models.CASCADE, related_name="items")
    # The job, subscription… the operation acts on (which table depends on the kind).
    target_id = models.BigIntegerField()
    result = models.CharField(max_length=16, choices=Result.choices, default=Result.WAITING)
    error = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["operation", "result", "id"], name="bulk_item_todo_idx")]

    def __str__(self) -> str:
        return f"#{self.target_id} in bulk #{self.operation_id}: {self.result}"


class WorkerHeartbeat(models.Model):
    """Each worker process says it is alive about every 30 s while it works, and the
    heartbeat schedule once a minute when it is idle."""

    worker = models.CharField(max_length=128, primary_key=True)
    last_seen = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.worker} at {self.last_seen:%H:%M:%S}"


class WorkerPing(models.Model):
    """A question a worker answers: "is any worker taking tasks right now?" (verify_integration
    asks it; the heartbeat above says which workers ran lately, this says one runs now)."""

    nonce = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    answered_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"ping {self.nonce[:8]} {'answered' if self.answered_at else 'waiting'}"
