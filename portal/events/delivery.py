"""Delivery: event endpoints receive the feed as signed POSTs (Standard Webhooks), one
delivery job per endpoint and batch of events, retried by the Job layer for more than 24 hours.

- Every attempt of a delivery (and a replay) carries the same `webhook-id` and body; each is
  signed afresh (new `webhook-timestamp`) with the endpoint's secret, and during a rotation
  with the previous secret too (two `v1,` signatures).
- Deliveries run on the jobs' "events" queue, served by workers of their own, so a slow
  endpoint never holds a worker Graph work needs. Each attempt is bounded by one wall-clock
  deadline (safe_http) and takes a slot first: at most EVENT_DELIVERY_ENDPOINT_CONCURRENCY
  attempts per endpoint and EVENT_DELIVERY_OWNER_CONCURRENCY per owner are in flight; a
  delivery finding none free waits a moment without using an attempt (JobDeferred).
- 410 Gone disables the endpoint. An endpoint failing for EVENT_ENDPOINT_DISABLE_AFTER_HOURS
  is disabled and raises the "endpoints failing" alert.
"""

from __future__ import annotations

import functools
import random
from datetime import datetime, timedelta
from typing import Any

import urllib3
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from opentelemetry.trace import SpanKind
from standardwebhooks import Webhook

from portal.access.actors import Actor
from portal.audit.services import record
from portal.events import safe_http
from portal.events.models import EventDelivery, EventEndpoint
from portal.events.services import kick_fan_out
from portal.jobs.errors import JobDeferred, PermanentJobError, TransientJobError
from portal.jobs.registry import SucceededWith
from portal.lib.crypto import decrypt
from portal.lib.tracing import current_traceparent, span

DELIVER_JOB = "events.deliver"
SUCCESS_STAMP_SECONDS = 5
# A slot outlives its attempt's deadline by this much if its worker died without freeing it.
SLOT_GRACE_SECONDS = 5
_SLOT_LOCK_CLASS = 74_013  # pg_advisory_xact_lock(class, owner): one owner's slots at a time
SYSTEM = Actor.system("events")


def disable_after() -> timedelta:
    return timedelta(hours=float(settings.EVENT_ENDPOINT_DISABLE_AFTER_HOURS))


def signature_headers(
    endpoint: EventEndpoint, delivery: EventDelivery, now: datetime | None = None
) -> dict[str, str]:
    now = now or timezone.now()
    secrets_ = [decrypt(endpoint.secret_encrypted)]
    if (
        endpoint.previous_secret_encrypted
        and endpoint.previous_secret_until
        and endpoint.previous_secret_until > now
    ):
        secrets_.append(decrypt(endpoint.previous_secret_encrypted))
    signatures = [
        Webhook(secret).sign(delivery.webhook_id, now, delivery.body) for secret in secrets_
    ]
    return {
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
        "Content-Type": "application/json",
        "User-Agent": "FleetGraphPortal-Events/1",
    }


def _record_attempt(delivery: EventDelivery, **fields: Any) -> None:
    EventDelivery.objects.filter(pk=delivery.pk).update(**fields)
    for name, value in fields.items():
        setattr(delivery, name, value)


def _disable(endpoint: EventEndpoint, reason: str) -> None:
    EventEndpoint.objects.filter(pk=endpoint.pk).update(
        state=EventEndpoint.State.DISABLED, state_reason=reason[:300]
    )
    record(
        "event_endpoint.disable",
        actor=SYSTEM,
        target_type="event_endpoint",
        target_id=endpoint.pk,
        params={"url": endpoint.url},
        reason=reason,
    )


def _note_success(endpoint: EventEndpoint) -> None:
    """Stamp the endpoint's health after a delivery got through. The row as loaded with the
    delivery says whether it was failing; a healthy endpoint's last_success_at is refreshed at
    most every SUCCESS_STAMP_SECONDS, so a busy endpoint costs no UPDATE per delivery."""
    now = timezone.now()
    was_failing = endpoint.failing_since is not None or endpoint.failure_streak > 0
    stale = (
        endpoint.last_success_at is None
        or (now - endpoint.last_success_at).total_seconds() >= SUCCESS_STAMP_SECONDS
    )
    if was_failing or stale:
        EventEndpoint.objects.filter(pk=endpoint.pk).update(
            last_success_at=now, failing_since=None, failure_streak=0
        )
    if was_failing:
        kick_fan_out()  # catch up on the backlog held back while it failed


@functools.cache
def _delivery_select() -> str:
    columns = [
        f"{table}.{connection.ops.quote_name(field.column)}"
        for table, model in (("d", EventDelivery), ("e", EventEndpoint))
        for field in model._meta.concrete_fields
    ]
    return (
        f"SELECT {', '.join(columns)} FROM {EventDelivery._meta.db_table} d"  # noqa: S608 (names from _meta; values are parameters)
        f" JOIN {EventEndpoint._meta.db_table} e ON e.id = d.endpoint_id WHERE d.id = %s"
    )


def _from_row(model: Any, values: Any) -> Any:
    fields = model._meta.concrete_fields
    converted = [
        field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value
        for field, value in zip(fields, values, strict=True)
    ]
    return model.from_db(connection.alias, [field.attname for field in fields], converted)


def _delivery_with_endpoint(delivery_id: int) -> EventDelivery | None:
    """The delivery and its endpoint in one query. On PostgreSQL without the ORM's query
    compiler, which cost three times the query itself on this hot path (bench/events); the
    values are converted as the ORM converts them."""
    if connection.vendor != "postgresql":  # SQLite's values need the backend's converters
        return EventDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    with connection.cursor() as cursor:
        cursor.execute(_delivery_select(), [delivery_id])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(EventDelivery._meta.concrete_fields)
    delivery = _from_row(EventDelivery, row[:split])
    delivery.endpoint = _from_row(EventEndpoint, row[split:])
    return delivery


@functools.cache
def _take_slot_sql(console: bool) -> str:
    deliveries = EventDelivery._meta.db_table
    endpoints = EventEndpoint._meta.db_table
    owner = "e.owner_client_id IS NULL" if console else "e.owner_client_id = %s"
    return (
        f"UPDATE {deliveries} SET sending_until = %s WHERE id = %s"  # noqa: S608 (names from _meta; values are parameters)
        f" AND (SELECT COUNT(*) FROM {deliveries} WHERE endpoint_id = %s"
        " AND sending_until > %s AND id <> %s) < %s"
        f" AND (SELECT COUNT(*) FROM {deliveries} d JOIN {endpoints} e ON e.id = d.endpoint_id"
        f" WHERE {owner} AND d.sending_until > %s AND d.id <> %s) < %s"
    )


def take_slot(delivery: EventDelivery, endpoint: EventEndpoint) -> bool:
    """Mark the delivery in flight if its endpoint and its owner each have a slot free (one
    statement; on PostgreSQL under the owner's advisory lock, so two workers never both take
    the last one). The slot lasts the attempt's deadline plus a grace period at most."""
    now = timezone.now()
    ops = connection.ops
    until = now + timedelta(seconds=settings.EVENT_DELIVERY_DEADLINE_SECONDS + SLOT_GRACE_SECONDS)
    moment = ops.adapt_datetimefield_value(now)
    owner = endpoint.owner_client_id
    params: list[Any] = [ops.adapt_datetimefield_value(until), delivery.pk]
    params += [endpoint.pk, moment, delivery.pk, settings.EVENT_DELIVERY_ENDPOINT_CONCURRENCY]
    params += [] if owner is None else [owner]
    params += [moment, delivery.pk, settings.EVENT_DELIVERY_OWNER_CONCURRENCY]
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", [_SLOT_LOCK_CLASS, (owner or 0) % 2**31]
            )
        cursor.execute(_take_slot_sql(owner is None), params)
        taken = cursor.rowcount == 1
    if taken:
        delivery.sending_until = until
    return taken


def deliver(delivery_id: int, job: Any) -> str | SucceededWith:  # noqa: C901 (every outcome of a delivery with its record update)
    """The delivery job's body: one signed POST; raises to have the job layer retry. A
    delivery that got through is marked delivered with the job's success (one statement)."""
    delivery = _delivery_with_endpoint(delivery_id)
    if delivery is None:
        return "missing"
    retried = (
        delivery.status == EventDelivery.Status.FAILED
        and job is not None
        and (job.pk == delivery.job_id)
    )
    if delivery.status == EventDelivery.Status.DELIVERED or (
        delivery.status == EventDelivery.Status.FAILED and not retried
    ):
        # A duplicate run (a replay sets the delivery pending first). A failed delivery's
        # own dead job runs again only when someone retried it: that is a replay, sent.
        return delivery.status
    endpoint = delivery.endpoint
    if endpoint.state != EventEndpoint.State.ACTIVE and not delivery.is_test:
        _record_attempt(delivery, status=EventDelivery.Status.HELD)
        return "held"
    if not take_slot(delivery, endpoint):
        raise JobDeferred(
            f"endpoint {endpoint.pk} or its owner has every delivery slot in use",
            seconds=random.uniform(1, 3),
        )
    now = timezone.now()
    attempt = {
        "attempts": delivery.attempts + 1,
        "last_attempt_at": now,
        "sending_until": None,  # the slot is free again with the attempt's outcome
    }
    refused = False
    status: int | None = None
    try:
        # The POST carries its span's traceparent: the Fleet side continues the trace.
        with span(
            "events.deliver POST", kind=SpanKind.CLIENT, attributes={"delivery.id": delivery.pk}
        ):
            headers = signature_headers(endpoint, delivery, now)
            if traceparent := current_traceparent():
                headers["traceparent"] = traceparent
            reply = safe_http.post(endpoint.url, delivery.body.encode("utf-8"), headers)
    except safe_http.UnsafeUrl as exc:
        error, refused = f"Refused: {exc}", True
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    else:
        status, error = reply.status, ""
        attempt.update(
            last_status_code=reply.status,
            last_duration_ms=reply.duration_ms,
            last_response_excerpt=reply.excerpt,
        )
        if not 200 <= reply.status < 300:
            error = f"HTTP {reply.status}"
    if not error:
        if not delivery.is_test:
            _note_success(endpoint)
        return SucceededWith(
            "delivered",
            EventDelivery,
            delivery.pk,
            {
                "status": EventDelivery.Status.DELIVERED,
                "last_error": "",
                "delivered_at": timezone.now(),
                **attempt,
            },
        )
    last_attempt = job is not None and job.attempts >= job.max_attempts
    with transaction.atomic():
        gone = status == 410
        # A refused address may resolve differently later: retried, but not for long.
        final = gone or last_attempt or (refused and delivery.attempts >= 3)
        _record_attempt(
            delivery,
            last_error=error[:500],
            status=EventDelivery.Status.FAILED if final else EventDelivery.Status.PENDING,
            **attempt,
        )
        if delivery.is_test:
            raise PermanentJobError(error)
        failing_since = endpoint.failing_since or now
        EventEndpoint.objects.filter(pk=endpoint.pk).update(
            last_failure_at=now,
            failure_streak=endpoint.failure_streak + 1,
            failing_since=failing_since,
        )
        if gone:
            _disable(endpoint, "The endpoint answered 410 Gone")
        elif now - failing_since >= disable_after():
            _disable(
                endpoint,
                f"Failing since {failing_since:%Y-%m-%d %H:%M} UTC (over {disable_after()})",
            )
            _record_attempt(delivery, status=EventDelivery.Status.HELD)
            return "disabled"
    if final:
        raise PermanentJobError(error)
    raise TransientJobError(error)
