"""Push: event endpoints receive the feed as signed POSTs (Standard Webhooks), one delivery
job per endpoint and batch of events, retried by the Job layer for more than 24 hours.

- Fan-out (`fan_out`) hands each active endpoint the events after its cursor, in batches of
  EVENT_DELIVERY_BATCH_SIZE. While one of an endpoint's deliveries is failing, no new ones
  are made for it: the events wait as its backlog (in order), and it catches up as soon as
  the failing delivery gets through.
- Every attempt of a delivery (and a replay) carries the same `webhook-id` and body; each is
  signed afresh (new `webhook-timestamp`) with the endpoint's secret, and during a rotation
  with the previous secret too (two `v1,` signatures).
- Deliveries run on the jobs' "events" queue, served by workers of their own, so a slow
  endpoint never holds a worker Graph work needs. Each attempt is bounded by one wall-clock
  deadline (safe_http) and takes a slot first: at most EVENT_DELIVERY_ENDPOINT_CONCURRENCY
  attempts per endpoint and EVENT_DELIVERY_OWNER_CONCURRENCY per owner are in flight; a
  delivery finding none free waits a moment without using an attempt (JobDeferred).
- 410 Gone disables the endpoint. An endpoint failing for EVENT_ENDPOINT_DISABLE_AFTER_HOURS
  is disabled and raises the "endpoints failing" alert. A paused or disabled endpoint keeps
  its cursor and its deliveries (held), so nothing is lost; resume sends them.
"""

from __future__ import annotations

import base64
import functools
import json
import random
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

import urllib3
from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from opentelemetry.trace import SpanKind
from standardwebhooks import Webhook

from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record
from portal.events import safe_http
from portal.events.models import Event, EventDelivery, EventEndpoint
from portal.events.services import event_json, kick_fan_out, parse_types
from portal.jobs.errors import JobDeferred, PermanentJobError, TransientJobError
from portal.jobs.registry import SucceededWith
from portal.jobs.runner import enqueue, enqueue_many
from portal.lib.crypto import decrypt, encrypt
from portal.lib.tracing import current_traceparent, span

DELIVER_JOB = "events.deliver"
SUCCESS_STAMP_SECONDS = 5
# A slot outlives its attempt's deadline by this much if its worker died without freeing it.
SLOT_GRACE_SECONDS = 5
_SLOT_LOCK_CLASS = 74_013  # pg_advisory_xact_lock(class, owner): one owner's slots at a time
SYSTEM = Actor.system("events")


class EndpointError(Exception):
    """A request about an endpoint that cannot be carried out (the message says why)."""


def batch_size() -> int:
    return int(settings.EVENT_DELIVERY_BATCH_SIZE)


def disable_after() -> timedelta:
    return timedelta(hours=float(settings.EVENT_ENDPOINT_DISABLE_AFTER_HOURS))


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


# --------------------------------------------------------------------------- management


def visible_endpoints(actor: Actor) -> QuerySet[EventEndpoint]:
    """What `actor` may see and act on: a service client its own endpoints; people (the
    console, their API tokens) and the system every endpoint. The one scoping rule of every
    list, detail, action, delivery history and replay."""
    if actor.kind == "client":
        if actor.client is None:
            return EventEndpoint.objects.none()
        return EventEndpoint.objects.filter(owner_client=actor.client)
    return EventEndpoint.objects.all()


def visible_deliveries(actor: Actor) -> QuerySet[EventDelivery]:
    """The deliveries of the endpoints `actor` may see."""
    if actor.kind == "client":
        return EventDelivery.objects.filter(endpoint__in=visible_endpoints(actor))
    return EventDelivery.objects.all()


def _get(actor: Actor, endpoint_id: Any, *, lock: bool = False) -> EventEndpoint:
    queryset = visible_endpoints(actor)
    if lock:
        queryset = queryset.select_for_update()
    try:
        return queryset.get(pk=int(endpoint_id))
    except (EventEndpoint.DoesNotExist, TypeError, ValueError):
        raise EndpointError(f"There is no event endpoint {endpoint_id}.") from None


def get_endpoint(actor: Actor, endpoint_id: Any) -> EventEndpoint:
    return _get(actor, endpoint_id)


def _validate(url: str, event_types: list[str] | str) -> tuple[str, list[str]]:
    if isinstance(event_types, list):
        if not all(isinstance(t, str) for t in event_types):
            raise EndpointError("eventTypes: a list of event type names.")
        event_types = ",".join(event_types)
    try:
        types = parse_types(event_types or "")
    except ValueError as exc:
        raise EndpointError(f"eventTypes: {exc}") from None
    url = (url or "").strip()
    if len(url) > 500:
        raise EndpointError("url: at most 500 characters.")
    try:
        safe_http.resolve(url)
    except safe_http.UnsafeUrl as exc:
        raise EndpointError(f"url: {exc}") from None
    return url, types


def create_endpoint(
    actor: Actor, url: str, event_types: list[str] | str = "", description: str = ""
) -> tuple[EventEndpoint, str]:
    """Create an endpoint; returns it and its signing secret (shown once). It receives the
    events that happen from now on (its cursor starts at the current end of the feed)."""
    require(
        actor,
        "manage_event_endpoints",
        action="event_endpoint.create",
        target_type="event_endpoint",
    )
    url, types = _validate(url, event_types)
    secret = new_secret()
    with transaction.atomic():
        cursor = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
        endpoint = EventEndpoint.objects.create(
            url=url,
            event_types=types,
            description=(description or "")[:300],
            secret_encrypted=encrypt(secret),
            cursor=cursor,
            created_by=actor.name[:150],
            owner_client=actor.client,
        )
        record(
            "event_endpoint.create",
            actor=actor,
            target_type="event_endpoint",
            target_id=endpoint.pk,
            params={"url": url, "event_types": types or "all", "owner": endpoint.owner_label},
        )
    return endpoint, secret


def _set_state(
    actor: Actor, endpoint_id: Any, state: str, action: str, reason: str = ""
) -> EventEndpoint:
    require(
        actor,
        "manage_event_endpoints",
        action=action,
        target_type="event_endpoint",
        target_id=endpoint_id,
    )
    with transaction.atomic():
        endpoint = _get(actor, endpoint_id, lock=True)
        before = endpoint.state
        fields: dict[str, Any] = {"state": state, "state_reason": reason[:300]}
        if state == EventEndpoint.State.ACTIVE:
            fields.update(failing_since=None, failure_streak=0)
        EventEndpoint.objects.filter(pk=endpoint.pk).update(**fields)
        for name, value in fields.items():
            setattr(endpoint, name, value)
        released = 0
        if state == EventEndpoint.State.ACTIVE:
            released = _release_held(endpoint)
            transaction.on_commit(kick_fan_out)
        record(
            action,
            actor=actor,
            target_type="event_endpoint",
            target_id=endpoint.pk,
            params={"before": before, "after": state, "released": released},
            reason=reason,
        )
    return endpoint


def pause_endpoint(actor: Actor, endpoint_id: Any, reason: str = "") -> EventEndpoint:
    return _set_state(
        actor, endpoint_id, EventEndpoint.State.PAUSED, "event_endpoint.pause", reason
    )


def resume_endpoint(actor: Actor, endpoint_id: Any) -> EventEndpoint:
    """Resume a paused endpoint or re-enable a disabled one; held deliveries go out."""
    return _set_state(actor, endpoint_id, EventEndpoint.State.ACTIVE, "event_endpoint.resume")


def rotate_secret(
    actor: Actor, endpoint_id: Any, overlap_hours: float = 24
) -> tuple[EventEndpoint, str]:
    """A new secret (shown once); deliveries carry a signature with the old one as well for
    `overlap_hours`, so the receiver can switch without rejecting anything."""
    require(
        actor,
        "manage_event_endpoints",
        action="event_endpoint.rotate_secret",
        target_type="event_endpoint",
        target_id=endpoint_id,
    )
    if not 0 <= overlap_hours <= 24 * 14:
        raise EndpointError("The overlap must be between 0 and 336 hours.")
    secret = new_secret()
    with transaction.atomic():
        endpoint = _get(actor, endpoint_id, lock=True)
        until = timezone.now() + timedelta(hours=overlap_hours)
        EventEndpoint.objects.filter(pk=endpoint.pk).update(
            secret_encrypted=encrypt(secret),
            previous_secret_encrypted=endpoint.secret_encrypted if overlap_hours else "",
            previous_secret_until=until if overlap_hours else None,
        )
        record(
            "event_endpoint.rotate_secret",
            actor=actor,
            target_type="event_endpoint",
            target_id=endpoint.pk,
            params={"overlap_hours": overlap_hours},
        )
        endpoint.refresh_from_db()
    return endpoint, secret


def delete_endpoint(actor: Actor, endpoint_id: Any) -> None:
    require(
        actor,
        "manage_event_endpoints",
        action="event_endpoint.delete",
        target_type="event_endpoint",
        target_id=endpoint_id,
    )
    with transaction.atomic():
        endpoint = _get(actor, endpoint_id, lock=True)
        record(
            "event_endpoint.delete",
            actor=actor,
            target_type="event_endpoint",
            target_id=endpoint.pk,
            params={"url": endpoint.url},
        )
        endpoint.delete()


def send_test(actor: Actor, endpoint_id: Any) -> EventDelivery:
    """A delivery of one `test` event (not in the feed), whatever the endpoint's state."""
    require(
        actor,
        "manage_event_endpoints",
        action="event_endpoint.test",
        target_type="event_endpoint",
        target_id=endpoint_id,
    )
    with transaction.atomic():
        endpoint = _get(actor, endpoint_id)
        now = timezone.now()
        event = {
            "id": f"test-{uuid.uuid4().hex[:12]}",
            "type": "test",
            "occurredAt": now,
            "subject": "",
            "data": {
                "message": "A test event from the Fleet Graph Portal",
                "requestedBy": actor.name,
            },
        }
        (delivery,) = _new_deliveries(endpoint, [[event]], is_test=True)
        record(
            "event_endpoint.test",
            actor=actor,
            target_type="event_endpoint",
            target_id=endpoint.pk,
            params={"webhook_id": delivery.webhook_id},
        )
    return delivery


def replay_delivery(actor: Actor, delivery_id: Any) -> EventDelivery:
    """Send one delivery again: the same webhook-id and body, a new signature."""
    require(
        actor,
        "manage_event_endpoints",
        action="event_delivery.replay",
        target_type="event_delivery",
        target_id=delivery_id,
    )
    with transaction.atomic():
        try:
            delivery = visible_deliveries(actor).select_for_update().get(pk=int(delivery_id))
        except (EventDelivery.DoesNotExist, TypeError, ValueError):
            raise EndpointError(f"There is no delivery {delivery_id}.") from None
        if delivery.status == EventDelivery.Status.PENDING and delivery.attempts == 0:
            raise EndpointError("This delivery has not been attempted yet.")
        _requeue([delivery])
        record(
            "event_delivery.replay",
            actor=actor,
            target_type="event_delivery",
            target_id=delivery.pk,
            params={"webhook_id": delivery.webhook_id, "endpoint": delivery.endpoint_id},
        )
    return delivery


def replay_since(actor: Actor, endpoint_id: Any, since: datetime) -> int:
    """Send again every delivery of this endpoint made since `since`."""
    require(
        actor,
        "manage_event_endpoints",
        action="event_endpoint.replay",
        target_type="event_endpoint",
        target_id=endpoint_id,
    )
    with transaction.atomic():
        endpoint = _get(actor, endpoint_id, lock=True)
        deliveries = list(
            EventDelivery.objects.select_for_update()
            .filter(endpoint=endpoint, created_at__gte=since, is_test=False)
            .exclude(status=EventDelivery.Status.PENDING, attempts=0)
        )
        _requeue(deliveries)
        record(
            "event_endpoint.replay",
            actor=actor,
            target_type="event_endpoint",
            target_id=endpoint.pk,
            params={"since": since.isoformat(), "deliveries": len(deliveries)},
        )
    return len(deliveries)


def _requeue(deliveries: list[EventDelivery]) -> None:
    for delivery in deliveries:
        job = enqueue(DELIVER_JOB, {"delivery": delivery.pk}, created_by="events:replay")
        EventDelivery.objects.filter(pk=delivery.pk).update(
            status=EventDelivery.Status.PENDING, job=job
        )
        delivery.status, delivery.job = EventDelivery.Status.PENDING, job


def _release_held(endpoint: EventEndpoint) -> int:
    held = list(EventDelivery.objects.filter(endpoint=endpoint, status=EventDelivery.Status.HELD))
    _requeue(held)
    return len(held)


# --------------------------------------------------------------------------- fan-out


def _new_deliveries(
    endpoint: EventEndpoint, batches: list[list[dict[str, Any]]], *, is_test: bool = False
) -> list[EventDelivery]:
    """One delivery and its job per batch of events (JSON as in the feed), made with three
    statements whatever the number of batches (the fan-out makes up to 20 at a time)."""
    now = timezone.now()
    deliveries = EventDelivery.objects.bulk_create(
        EventDelivery(
            endpoint=endpoint,
            webhook_id=f"msg_{uuid.uuid4().hex}",
            first_event_id=0 if is_test else int(events[0]["id"]),
            last_event_id=0 if is_test else int(events[-1]["id"]),
            event_count=len(events),
            body=json.dumps(
                {"type": "event.batch", "timestamp": now.isoformat(), "data": {"events": events}},
                default=str,
                separators=(",", ":"),
            ),
            is_test=is_test,
            created_at=now,
        )
        for events in batches
    )
    jobs = enqueue_many(
        DELIVER_JOB, [{"delivery": delivery.pk} for delivery in deliveries], created_by="events"
    )
    for delivery, job in zip(deliveries, jobs, strict=True):
        delivery.job = job
    EventDelivery.objects.bulk_update(deliveries, ["job"])
    return deliveries


def _is_failing(endpoint: EventEndpoint) -> bool:
    return (
        EventDelivery.objects.filter(
            endpoint=endpoint, status=EventDelivery.Status.PENDING, is_test=False
        )
        .exclude(last_error="")
        .exists()
    )


def fan_out_endpoint(endpoint_id: int, max_batches: int = 20) -> tuple[int, bool]:
    """Make deliveries for one endpoint's backlog, up to `max_batches` of them: (how many
    events they carry, whether the backlog goes on past them)."""
    size = batch_size()
    with transaction.atomic():
        endpoint = EventEndpoint.objects.select_for_update().filter(pk=endpoint_id).first()
        if endpoint is None or endpoint.state != EventEndpoint.State.ACTIVE:
            return 0, False
        if _is_failing(endpoint):
            return 0, False  # the backlog waits until the failing delivery gets through
        rows = list(
            Event.objects.filter(pk__gt=endpoint.cursor).order_by("id")[: size * max_batches]
        )
        if not rows:
            return 0, False
        wanted = [event_json(row) for row in rows if endpoint.wants(row.type)]
        if wanted:
            _new_deliveries(
                endpoint, [wanted[start : start + size] for start in range(0, len(wanted), size)]
            )
        EventEndpoint.objects.filter(pk=endpoint.pk).update(cursor=rows[-1].pk)
    return len(wanted), len(rows) == size * max_batches


def fan_out() -> int:
    """Every active endpoint's backlog (the fan-out job and its one-minute schedule): returns
    how many events the new deliveries carry. Endpoints already at the newest event are not
    touched (the schedule's run is then two queries). One follow-up job, not one per
    endpoint, takes over where a batch limit stopped this run: each run covers every
    endpoint, so a follow-up per endpoint would multiply the jobs with every round."""
    newest = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
    behind = EventEndpoint.objects.filter(
        state=EventEndpoint.State.ACTIVE, cursor__lt=newest
    ).values_list("id", flat=True)
    events = 0
    more = False
    for endpoint_id in behind:
        made, rest = fan_out_endpoint(endpoint_id)
        events += made
        more = more or rest
    if more:
        transaction.on_commit(kick_fan_out)
    return events


# --------------------------------------------------------------------------- delivery


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
