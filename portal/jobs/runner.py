"""Enqueue, dispatch and run jobs.

With the ORM broker, `enqueue()` inside the caller's transaction is a transactional outbox:
the job row and django-q2's task row commit (or roll back) together. With Redis, dispatch
waits for the commit; the release sweep re-dispatches anything a crash left behind.

One module, just over 600 lines, on purpose: enqueue, dispatch, claim, run and record are one
job's life cycle under one lease and one outbox rule; split, each part would need the others'
private states.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import logging
import os
import random
import re
import socket
import time
import traceback
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import SignedPackage
from django_q.tasks import async_task

from portal.jobs.broker import wake_workers
from portal.jobs.errors import JobDeferred
from portal.jobs.models import Job, JobAttempt, PausedJobType, WorkerHeartbeat
from portal.jobs.registry import JobType, SucceededWith, UnknownJobType, get_job_type, queue_of
from portal.lib.logging import job_id_var
from portal.lib.redaction import redact_text
from portal.lib.tracing import continued, current_traceparent

logger = logging.getLogger(__name__)

RUN_TASK = "portal.jobs.tasks.run_job"
# The jobs queued with follow_up=True while a job runs in this process (run_job sets it).
_follow_ups: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "follow_ups", default=None
)
# A pending job dispatched this long ago and still not started is dispatched again (a lost
# broker message); run_job's atomic claim makes the duplicate harmless.
STALE_DISPATCH = timedelta(minutes=15)
LEASE_GRACE = timedelta(seconds=30)
TRACEBACK_LIMIT = 8000


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _broker_is_transactional() -> bool:
    return bool(settings.Q_CLUSTER.get("orm")) and not settings.Q_CLUSTER.get("redis")


def queue_key(queue: str) -> str:
    """django-q2's list for a job queue: the main cluster's name, or `<name>-<queue>`. Always
    named explicitly: a worker of the events queue also dispatches main-queue jobs."""
    name = str(settings.Q_CLUSTER["name"])
    return f"{name}-{queue}" if queue else name


def dispatch(job_ids: Iterable[int], job_type: str | None = None) -> None:
    """Hand jobs to django-q2, each on its type's queue (`job_type`: all are of that type).
    Callers have already marked them dispatched."""
    ids = list(job_ids)
    if not ids:
        return
    if job_type is not None:
        by_queue = {queue_of(job_type): ids}
    else:
        types = dict(Job.objects.filter(pk__in=ids).values_list("id", "job_type"))
        by_queue = {}
        for job_id in ids:  # in the caller's order
            by_queue.setdefault(queue_of(types.get(job_id, "")), []).append(job_id)
    for queue, queue_ids in by_queue.items():
        _dispatch(queue_ids, queue_key(queue))


def _dispatch(ids: list[int], key: str) -> None:
    if Conf.SYNC or len(ids) < BULK_DISPATCH_MIN:

        def push() -> None:
            for job_id in ids:
                async_task(RUN_TASK, job_id, task_name=f"job-{job_id}", cluster=key)
    else:

        def push() -> None:
            _bulk_push(ids, key)

    if _broker_is_transactional():
        push()
        # This queue's idle workers take it now, not at their poll.
        transaction.on_commit(functools.partial(wake_workers, key))
    else:
        transaction.on_commit(push)


# From this many jobs on, dispatch writes the broker's rows (or Redis list entries) in bulk:
# one INSERT (one RPUSH) per _BULK_BATCH instead of one per job — the drain's batch of a
# storm's users, the fan-out, retry-all of 100,000.
BULK_DISPATCH_MIN = 2
_BULK_BATCH = 2000


def _task_package(job_id: int, now: Any) -> str:
    """The same signed package django-q2's async_task builds for run_job(job_id)."""
    task: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "name": f"job-{job_id}",
        "func": RUN_TASK,
        "args": (job_id,),
        "kwargs": {},
        "started": now,
    }
    if Conf.ACK_FAILURES:
        task["ack_failure"] = True
    return SignedPackage.dumps(task)


def _bulk_push(ids: list[int], key: str) -> None:
    broker = get_broker(key)
    now = timezone.now()
    if _broker_is_transactional():
        for start in range(0, len(ids), _BULK_BATCH):
            OrmQ.objects.using(Conf.ORM).bulk_create(
                OrmQ(key=key, payload=_task_package(job_id, now), lock=now)
                for job_id in ids[start : start + _BULK_BATCH]
            )
    else:  # Redis: the list django-q2's Redis broker pushes to, many entries per RPUSH
        for start in range(0, len(ids), _BULK_BATCH):
            packages = [_task_package(job_id, now) for job_id in ids[start : start + _BULK_BATCH]]
            broker.connection.rpush(broker.list_key, *packages)


def paused_types() -> set[str]:
    return set(PausedJobType.objects.values_list("job_type", flat=True))


def enqueue(
    job_type: str,
    payload: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    created_by: str = "",
    correlation_id: str = "",
    delay_seconds: float | None = None,
    max_attempts: int | None = None,
    trace_context: str | None = None,
    follow_up: bool = False,
) -> Job:
    """Create a job (or return the one with the same idempotency key) and dispatch it.
    Its run continues `trace_context` (a traceparent), by default the current span's.

    `follow_up`: when a job is running in this process (a worker), the new job is not handed
    to the broker but runs here right after the current one, once this transaction commits
    — a hop that would only wait for another worker to take it. Should this process die
    first, the job is pending and undispatched, which the release sweep dispatches. Outside
    a job run (a web request, the drain) it is dispatched as usual."""
    definition = get_job_type(job_type)
    now = timezone.now()
    waits = bool(delay_seconds)
    follow_ups = _follow_ups.get() if follow_up and not waits else None
    # One INSERT and nothing dispatched (a delayed job, a follow-up): no transaction of its
    # own (a BEGIN and a COMMIT more, after every event-emitting job for its fan-out).
    alone = not idempotency_key and (waits or follow_ups is not None)
    # No savepoint when the caller has a transaction (the webhook receiver does): the job
    # commits or rolls back with it, and two round trips are saved on the hot path.
    with contextlib.nullcontext() if alone else transaction.atomic(savepoint=False):
        if idempotency_key:
            existing = Job.objects.filter(idempotency_key=idempotency_key).first()
            if existing is not None:
                return existing
        # A paused type is not checked here: run_job's claim refuses paused types and parks
        # the job undispatched, so enqueueing (the webhook's hot path) saves that query.
        fields = {
            "job_type": job_type,
            "payload": payload or {},
            "max_attempts": max_attempts or definition.max_attempts,
            "idempotency_key": idempotency_key or None,
            "created_by": created_by[:150],
            "correlation_id": correlation_id[:64],
            "trace_context": current_traceparent() if trace_context is None else trace_context,
            "next_attempt_at": now + timedelta(seconds=delay_seconds) if delay_seconds else None,
            "dispatched_at": None if waits or follow_ups is not None else now,
        }
        if idempotency_key:
            try:
                # A savepoint: a concurrent enqueue with the same key may win the insert.
                with transaction.atomic():
                    job = Job.objects.create(**fields)
            except IntegrityError:
                return Job.objects.get(idempotency_key=idempotency_key)
        else:
            job = Job.objects.create(**fields)
        if follow_ups is not None:
            transaction.on_commit(functools.partial(follow_ups.append, job.pk))
        elif not waits:
            dispatch([job.pk], job_type)
    return job


def enqueue_many(
    job_type: str,
    payloads: list[dict[str, Any]],
    *,
    created_by: str = "",
    trace_contexts: list[str] | None = None,
) -> list[Job]:
    """Create several jobs of one type at once (no idempotency keys, no delay) and dispatch
    them together: one INSERT for the jobs instead of one per job (the event fan-out, the
    inbox drain). Each run continues its entry of `trace_contexts` (traceparents, one per
    payload), by default the current span's."""
    definition = get_job_type(job_type)
    now = timezone.now()
    if trace_contexts is None:
        trace_contexts = [current_traceparent()] * len(payloads)
    elif len(trace_contexts) != len(payloads):
        raise ValueError("enqueue_many: one trace context per payload")
    with transaction.atomic(savepoint=False):
        jobs = Job.objects.bulk_create(
            Job(
                job_type=job_type,
                payload=payload,
                max_attempts=definition.max_attempts,
                created_by=created_by[:150],
                dispatched_at=now,
                trace_context=traceparent,
            )
            for payload, traceparent in zip(payloads, trace_contexts, strict=True)
        )
        dispatch([job.pk for job in jobs], job_type)
    return jobs


def enqueue_once_each(
    job_type: str,
    payloads: dict[str, dict[str, Any]],
    *,
    created_by: str = "",
    delays: dict[str, float] | None = None,
) -> dict[str, Job]:
    """enqueue() with an idempotency key, for many keys at once: {key: its job}, the
    existing job for a key that has one; `delays` (seconds, by key) as enqueue's
    delay_seconds. Three statements (read, INSERT … ON CONFLICT DO NOTHING, read back) and
    one dispatch, however many keys (the drain asks for the members of a storm's new chats,
    the interval schedule for every user's sync, this way). Two callers racing on a key may
    both dispatch its job; its run happens once (run_job claims it)."""
    if not payloads:
        return {}
    definition = get_job_type(job_type)
    now = timezone.now()
    traceparent = current_traceparent()
    delays = delays or {}

    def by_key(keys: Iterable[str]) -> dict[str, Job]:
        rows = Job.objects.filter(idempotency_key__in=list(keys))
        return {str(job.idempotency_key): job for job in rows}

    with transaction.atomic(savepoint=False):
        jobs = by_key(payloads)
        missing = [key for key in payloads if key not in jobs]
        if missing:
            Job.objects.bulk_create(
                [
                    Job(
                        job_type=job_type,
                        payload=payloads[key],
                        max_attempts=definition.max_attempts,
                        idempotency_key=key,
                        created_by=created_by[:150],
                        # A delayed job waits for the release sweep, as enqueue's does.
                        next_attempt_at=now + timedelta(seconds=delays[key])
                        if delays.get(key)
                        else None,
                        dispatched_at=None if delays.get(key) else now,
                        trace_context=traceparent,
                    )
                    for key in missing
                ],
                ignore_conflicts=True,
            )
            created = by_key(missing)
            jobs.update(created)
            dispatch([job.pk for job in created.values() if job.dispatched_at == now], job_type)
    return {key: jobs[key] for key in payloads}


def backoff_seconds(definition: JobType, attempts: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter; Graph's Retry-After, when given, wins."""
    if retry_after is not None and retry_after > 0:
        return retry_after + random.uniform(0, min(5.0, retry_after * 0.1))
    delay = min(definition.backoff_cap, definition.backoff_base * 2 ** max(0, attempts - 1))
    # "Equal jitter": never less than half the delay, so retries stay spread but not instant.
    return delay / 2 + random.uniform(0, delay / 2)


_NORMALISE = (
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.I), "<hex>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\d+"), "<n>"),
)


def error_signature(exc: BaseException) -> tuple[str, str]:
    """(exception class, short signature) grouping failures that are the same problem."""
    error_class = f"{type(exc).__module__}.{type(exc).__qualname__}"
    message = str(exc)
    for pattern, placeholder in _NORMALISE:
        message = pattern.sub(placeholder, message)
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    top = f"{os.path.basename(frames[-1].filename)}:{frames[-1].name}" if frames else ""
    digest = hashlib.sha256(f"{error_class}|{message[:300]}|{top}".encode()).hexdigest()[:16]
    return error_class[:128], digest


def _lease() -> timedelta:
    # django-q2 kills a task after Q_CLUSTER["timeout"]; past that (and a grace period) a run
    # that has not finished has no worker any more.
    timeout = settings.Q_CLUSTER.get("timeout")  # Q_TIMEOUT, an int (Q_CLUSTER mixes types)
    return timedelta(seconds=timeout if isinstance(timeout, int) and timeout else 300) + LEASE_GRACE


_CLAIM_SQL = """
UPDATE {job} SET status = %s, attempts = attempts + 1, runs = runs + 1, started_at = %s,
    finished_at = NULL, lease_expires_at = %s, worker = %s
WHERE id = %s AND status = %s
  AND NOT EXISTS (SELECT 1 FROM {paused} WHERE {paused}.job_type = {job}.job_type)
RETURNING {columns}
"""


def _claim(job_id: int, worker: str) -> Job | None:
    """Atomically take a pending job of a type that is not paused (one statement)."""
    now = timezone.now()
    ops = connection.ops
    columns = [field.column for field in Job._meta.concrete_fields]
    sql = _CLAIM_SQL.format(
        job=Job._meta.db_table, paused=PausedJobType._meta.db_table, columns=", ".join(columns)
    )
    params = [
        Job.Status.RUNNING,
        ops.adapt_datetimefield_value(now),
        ops.adapt_datetimefield_value(now + _lease()),
        worker,
        job_id,
        Job.Status.PENDING,
    ]
    claimed = list(Job.objects.raw(sql, params))
    return claimed[0] if claimed else None


def run_job(job_id: int) -> str:
    """Run one job if it is still due. Safe to call twice: only one run claims it."""
    worker = worker_identity()
    # A database outage (a restart, a failover) at the claim would fail the django-q2 task
    # and leave the job dispatched but not started until the stale-dispatch sweep sends it
    # again (STALE_DISPATCH, 15 minutes): ride it out as an outcome's write does.
    job = _recording(_claim, job_id, worker)
    if job is None:
        return _why_not_claimed(job_id)
    # The claim counted the attempt (attempts, runs, started_at, worker on the job row). The
    # attempt's own row is written with its outcome; if the worker dies first, the watchdog
    # writes it as lost.
    started = time.monotonic()
    log_context = job_id_var.set(str(job.pk))
    follow_ups: list[int] = []
    follow_context = _follow_ups.set(follow_ups)
    try:
        definition = get_job_type(job.job_type)
        with continued(
            job.trace_context,
            f"job {job.job_type}",
            attributes={"job.id": job.pk, "job.type": job.job_type, "job.run": job.runs},
        ):
            result = definition.handler(job)
    except UnknownJobType as exc:
        outcome = _recording(record_failure, job, _Permanent(str(exc)), None, started, worker)
    except JobDeferred as exc:
        outcome = _recording(record_deferral, job, exc, worker)
    except Exception as exc:  # every failure is recorded and classified
        outcome = _recording(record_failure, job, exc, definition, started, worker)
    else:
        outcome = _recording(record_success, job, result, started, worker)
    finally:
        job_id_var.reset(log_context)
        _follow_ups.reset(follow_context)
    # Follow-ups (enqueued with follow_up=True) run now, before anything could dispatch them.
    for follow_up_id in follow_ups:
        run_job(follow_up_id)
    release_due_jobs_now_and_then()
    return outcome


RECORD_RETRIES = (1.0, 2.0, 4.0, 8.0)


def _recording(record: Any, *args: Any) -> Any:
    """Write a run's claim or outcome, riding out a short database outage (a restart, a
    failover).

    Without this, a database error here would leave the job running until its lease
    expires, and a finished side effect (a sent mail) would be attempted again.
    """

    for pause in (*RECORD_RETRIES, None):
        try:
            return record(*args)
        except DatabaseError:
            if pause is None:
                raise
            logger.warning("Recording a job outcome failed; retrying in %.0f s", pause)
            if not connection.in_atomic_block:
                connection.close()  # the next query reconnects
            time.sleep(pause)
    raise AssertionError("unreachable")


class _Permanent(Exception):
    transient = False


def _why_not_claimed(job_id: int) -> str:
    row = Job.objects.filter(pk=job_id).values_list("status", "job_type").first()
    if row is None:
        return "missing"
    status, job_type = row
    if status == Job.Status.PENDING and PausedJobType.objects.filter(job_type=job_type).exists():
        # Wait, undispatched, until the type is resumed.
        Job.objects.filter(pk=job_id, status=Job.Status.PENDING).update(dispatched_at=None)
        return "paused"
    return "not-claimable"


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return {"repr": repr(value)[:1000]}
    return value


def _attempt(
    job: Job, outcome: str, now: Any, worker: str | None, started: float, **fields: Any
) -> JobAttempt:
    return JobAttempt(
        job_id=job.pk,
        number=job.runs,
        started_at=job.started_at or now,
        finished_at=now,
        outcome=outcome,
        worker=worker or job.worker,
        duration_ms=int((time.monotonic() - started) * 1000) if started else None,
        **fields,
    )


_SUCCESS_SQL = """
WITH finished AS (
    UPDATE {job} SET status = %s, finished_at = %s, lease_expires_at = NULL,
        next_attempt_at = NULL, result = %s::jsonb
    WHERE id = %s AND status = %s AND worker = %s
    RETURNING id, runs, started_at
){also}
INSERT INTO {attempt} (job_id, number, started_at, finished_at, outcome, error, traceback,
                       duration_ms, worker)
SELECT id, runs, COALESCE(started_at, %s), %s, %s, '', '', %s, %s FROM finished
"""


def _also_update_sql(also: SucceededWith) -> tuple[str, list[Any]]:
    """The handler's record update as one more data-modifying CTE of the success statement,
    applied only if the job's own update matched (`finished` has its row)."""
    meta = also.model._meta
    quote = connection.ops.quote_name
    assignments, params = [], []
    for name, value in also.fields.items():
        field = meta.get_field(name)
        assignments.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    sql = (
        f",\nalso_updated AS (UPDATE {quote(meta.db_table)} SET {', '.join(assignments)}"  # noqa: S608 (names from _meta; values are parameters)
        f" WHERE {quote(meta.pk.column)} = %s AND EXISTS (SELECT 1 FROM finished))"
    )
    return sql, [*params, meta.pk.get_db_prep_value(also.pk, connection)]


def record_success(job: Job, result: Any, started: float, worker: str) -> str:
    now = timezone.now()
    also = result if isinstance(result, SucceededWith) else None
    if also is not None:
        result = also.result
    # Conditional: if the watchdog already gave this run up, its verdict stands.
    if connection.vendor == "postgresql":
        # One statement (a data-modifying CTE) instead of four round trips: the job's update
        # and its attempt row commit together. This is the queue's hottest path.

        ops = connection.ops
        moment = ops.adapt_datetimefield_value(now)
        duration = int((time.monotonic() - started) * 1000)
        also_sql, also_params = _also_update_sql(also) if also is not None else ("", [])
        with connection.cursor() as cursor:
            cursor.execute(
                _SUCCESS_SQL.format(
                    job=Job._meta.db_table, attempt=JobAttempt._meta.db_table, also=also_sql
                ),
                [
                    Job.Status.SUCCEEDED,
                    moment,
                    json.dumps(_json_safe(result)),
                    job.pk,
                    Job.Status.RUNNING,
                    worker,
                    *also_params,
                    moment,
                    moment,
                    JobAttempt.Outcome.SUCCEEDED,
                    duration,
                    worker,
                ],
            )
            updated = cursor.rowcount
        return "succeeded" if updated else "succeeded-late"
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, worker=worker).update(
            status=Job.Status.SUCCEEDED,
            finished_at=now,
            lease_expires_at=None,
            next_attempt_at=None,
            result=_json_safe(result),
        )
        if updated:
            _attempt(job, JobAttempt.Outcome.SUCCEEDED, now, worker, started).save()
            if also is not None:
                also.model.objects.filter(pk=also.pk).update(**also.fields)
    return "succeeded" if updated else "succeeded-late"


def record_deferral(job: Job, deferred: JobDeferred, worker: str) -> str:
    """Put a run that was not made back to waiting: the claim's attempt and run are given
    back, no attempt row is written; the release sweep dispatches it when the wait is over."""
    updated = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, worker=worker).update(
        status=Job.Status.PENDING,
        attempts=F("attempts") - 1,
        runs=F("runs") - 1,
        lease_expires_at=None,
        dispatched_at=None,
        next_attempt_at=timezone.now() + timedelta(seconds=deferred.seconds),
    )
    return "deferred" if updated else "deferred-late"


def record_failure(
    job: Job,
    exc: BaseException,
    definition: JobType | None,
    started: float,
    worker: str | None,
    *,
    lost: bool = False,
) -> str:
    now = timezone.now()
    error_class, signature = error_signature(exc)
    message = redact_text(f"{type(exc).__name__}: {exc}")[:2000]
    trace = redact_text("".join(traceback.format_exception(exc)))[-TRACEBACK_LIMIT:]
    transient = getattr(exc, "transient", True)
    retry_after = getattr(exc, "retry_after", None)
    attempts = Job.objects.filter(pk=job.pk).values_list("attempts", "max_attempts").first()
    used, allowed = attempts or (job.attempts, job.max_attempts)
    fields: dict[str, Any] = {
        "finished_at": now,
        "lease_expires_at": None,
        "last_error": message,
        "error_class": error_class,
        "error_signature": signature,
    }
    if transient and used < allowed and definition is not None:
        fields.update(
            status=Job.Status.RETRYING,
            dispatched_at=None,
            next_attempt_at=now + timedelta(seconds=backoff_seconds(definition, used, retry_after)),
        )
        verdict = "retrying"
    else:
        fields.update(status=Job.Status.DEAD, next_attempt_at=None)
        verdict = "dead"
    condition = Q(pk=job.pk, status=Job.Status.RUNNING)
    if worker is not None:
        condition &= Q(worker=worker)
    with transaction.atomic():
        updated = Job.objects.filter(condition).update(**fields)
        if updated:
            outcome = JobAttempt.Outcome.LOST if lost else JobAttempt.Outcome.FAILED
            _attempt(job, outcome, now, worker, started, error=message, traceback=trace).save()
    if updated:
        logger.warning(
            "Job %s (%s) run %s failed: %s -> %s", job.pk, job.job_type, job.runs, message, verdict
        )
    return verdict if updated else "failed-late"


def release_due_jobs(limit: int = 500) -> int:
    """Dispatch jobs whose wait is over (retries, delayed and resumed jobs, lost dispatches)."""
    now = timezone.now()
    due = (
        Q(status=Job.Status.RETRYING, next_attempt_at__lte=now)
        | Q(status=Job.Status.PENDING, dispatched_at__isnull=True)
        & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        | Q(status=Job.Status.PENDING, dispatched_at__lt=now - STALE_DISPATCH)
    )
    with transaction.atomic():
        # The paused types as a subquery: one statement (a worker runs this about once a
        # second after its jobs, in the time it could take the next one).
        paused = PausedJobType.objects.values("job_type")
        candidates = Job.objects.filter(due).exclude(job_type__in=paused)
        candidates = candidates.order_by("next_attempt_at", "id")
        if connection.features.has_select_for_update_skip_locked:
            # Two releasers (two nodes) never dispatch the same job twice.
            candidates = candidates.select_for_update(skip_locked=True)
        ids = list(candidates.values_list("id", flat=True)[:limit])
        if not ids:
            return 0
        Job.objects.filter(pk__in=ids).update(status=Job.Status.PENDING, dispatched_at=now)
        dispatch(ids)
    return len(ids)


def release_now(job_ids: Iterable[int]) -> int:
    """Dispatch pending jobs that are still waiting to be handed to the broker (delayed
    jobs), now instead of at the release sweep, which may be a minute away; how many were.
    Two statements however many jobs (the drain releases a batch's)."""
    ids = list(job_ids)
    if not ids:
        return 0
    with transaction.atomic(savepoint=False):
        waiting = Job.objects.filter(
            pk__in=ids, status=Job.Status.PENDING, dispatched_at__isnull=True
        )
        if connection.features.has_select_for_update_skip_locked:
            # A release sweep taking the same job meanwhile dispatches it; we leave it.
            waiting = waiting.select_for_update(skip_locked=True)
        released = list(waiting.values_list("id", flat=True))
        if released:
            Job.objects.filter(pk__in=released).update(
                dispatched_at=timezone.now(), next_attempt_at=None
            )
            dispatch(released)
    return len(released)


_last_opportunistic_release = 0.0
_last_heartbeat = 0.0
HEARTBEAT_EVERY_SECONDS = 30.0


def beat() -> None:
    """Record that this worker process is alive."""
    WorkerHeartbeat.objects.update_or_create(
        worker=worker_identity(), defaults={"last_seen": timezone.now()}
    )


def release_due_jobs_now_and_then(every_seconds: float = 1.0) -> None:
    """While workers are busy, release due retries about once a second.

    django-q2 schedules fire at most once a minute; this keeps short backoffs short without a
    query per job.
    """
    global _last_opportunistic_release
    now = time.monotonic()
    if now - _last_opportunistic_release < every_seconds:
        return
    _last_opportunistic_release = now
    try:
        release_due_jobs(limit=200)
    except Exception:
        logger.exception("Releasing due jobs failed")
