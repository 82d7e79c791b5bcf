"""Event endpoints: who sees which (`visible_endpoints`, the one scoping rule), and the
audited actions on them (create, pause, resume, rotate the secret, delete, send a test, replay).

A paused or disabled endpoint keeps its cursor and its deliveries (held), so nothing is lost;
resume sends them. Making deliveries is portal/events/fan_out.py, sending them
portal/events/delivery.py.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record
from portal.events import safe_http
from portal.events.delivery import DELIVER_JOB
from portal.events.fan_out import make_deliveries
from portal.events.models import Event, EventDelivery, EventEndpoint
from portal.events.services import kick_fan_out, parse_types
from portal.jobs.runner import enqueue
from portal.lib.crypto import encrypt


class EndpointError(Exception):
    """A request about an endpoint that cannot be carried out (the message says why)."""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


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
        (delivery,) = make_deliveries(endpoint, [[event]], is_test=True)
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
