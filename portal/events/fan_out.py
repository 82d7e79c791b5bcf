"""Fan-out: each active endpoint gets the events after its cursor as delivery jobs, in
batches of EVENT_DELIVERY_BATCH_SIZE.

While one of an endpoint's deliveries is failing, no new ones are made for it: the events wait
as its backlog (in order), and it catches up as soon as the failing delivery gets through.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.events.delivery import DELIVER_JOB
from portal.events.models import Event, EventDelivery, EventEndpoint
from portal.events.services import event_json, kick_fan_out
from portal.jobs.runner import enqueue_many


def batch_size() -> int:
    return int(settings.EVENT_DELIVERY_BATCH_SIZE)


def make_deliveries(
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
            make_deliveries(
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
