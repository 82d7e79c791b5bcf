"""Change notifications: the receiver's fast path (parse, verify, store, enqueue) and the
worker's processing of what was stored.

Fast path (in the request, graph-reference.md §2, reliability-notes.md §2.3): no Graph call,
one SELECT for the subscriptions named in the batch, the clientState compared in constant
time, then in ONE transaction: inbox rows (INSERT ... ON CONFLICT DO NOTHING on the dedupe
key), one processing job for the batch, lifecycle events and their jobs, the security
counters. Either all of it commits or the view answers 503 and Graph retries.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from integrations.microsoft import sync
from integrations.microsoft.crypto import DecryptionError, decrypt
from integrations.microsoft.kinds import parse_graph_datetime
from integrations.microsoft.models import (
    LifecycleEvent,
    NotificationInbox,
    Subscription,
    WebhookRejection,
)
from portal.jobs.runner import enqueue
from portal.runtime.registry import get

logger = logging.getLogger(__name__)

PROCESS_JOB = "graph.process_notifications"
LIFECYCLE_JOB = "graph.lifecycle_event"
MAX_ITEMS = 1000  # Graph batches are small (10 in practice); anything bigger is not Graph
# Graph subscription ids are GUIDs; anything else cannot be ours and never reaches a query.
_SUBSCRIPTION_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# Kept as received in lifecycle rows, so bounded and plain.
_EVENT_NAME = re.compile(r"^[A-Za-z]{1,32}$")


class Malformed(ValueError):
    """The body is not a notification collection; `str(exc)` is the reason (for the 400)."""


@dataclass
class Parsed:
    validation_token: str | None = None
    items: list[dict[str, Any]] = field(default_factory=list)


def parse_body(raw: bytes) -> Parsed:
    """Parse a POSTed body: Graph's `{"value": [...]}` or the runbook's `{"validationToken"}`.

    The content type is ignored on purpose: `curl -d` labels JSON as a form (design.md).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("body is not UTF-8") from None
    if not text.strip():
        raise Malformed("empty body: expected a JSON object with a 'value' array")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise Malformed("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Malformed("body must be a JSON object")
    if "value" not in body and "validationToken" in body:
        token = body["validationToken"]
        if not isinstance(token, str):
            raise Malformed("validationToken must be a string")
        return Parsed(validation_token=token)
    items = body.get("value")
    if not isinstance(items, list) or not items:
        raise Malformed("'value' must be a non-empty array of notifications")
    if len(items) > MAX_ITEMS:
        raise Malformed(f"more than {MAX_ITEMS} notifications in one request")
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise Malformed(f"value[{position}] is not an object")
        if not isinstance(item.get("subscriptionId"), str):
            raise Malformed(f"value[{position}].subscriptionId is missing or not a string")
        if "lifecycleEvent" in item:
            if not isinstance(item["lifecycleEvent"], str):
                raise Malformed(f"value[{position}].lifecycleEvent is not a string")
            continue
        if not isinstance(item.get("changeType"), str):
            raise Malformed(f"value[{position}].changeType is missing or not a string")
        data = item.get("resourceData")
        if data is not None and not isinstance(data, dict):
            raise Malformed(f"value[{position}].resourceData is not an object")
        if not isinstance(item.get("resource"), str) and not (
            isinstance(data, dict) and isinstance(data.get("id"), str)
        ):
            raise Malformed(f"value[{position}] names no resource")
    return Parsed(items=items)


def _clean(value: Any, limit: int) -> str:
    """A string safe for any database column: no NULs, no lone surrogates, bounded."""
    if not isinstance(value, str):
        return ""
    text = value.replace("\x00", "")
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:limit]


def _secret_bytes(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    return value.encode("utf-8", "surrogatepass")


def dedupe_key(item: dict[str, Any], now: Any) -> str:
    """subscriptionId | resource id | changeType | etag — or, without an etag, the
    notification's own id, else the minute it arrived (so a redelivery within the minute is
    absorbed, and a later change of an etag-less Teams message is not)."""
    data = item.get("resourceData") if isinstance(item.get("resourceData"), dict) else {}
    resource_id = data.get("id") if isinstance(data.get("id"), str) else item.get("resource")
    etag = data.get("@odata.etag")
    if isinstance(etag, str) and etag:
        tail = f"etag:{etag}"
    elif isinstance(item.get("id"), str) and item["id"]:
        tail = f"id:{item['id']}"
    else:
        tail = f"at:{now:%Y%m%d%H%M}"
    raw = "|".join([item["subscriptionId"], str(resource_id), str(item.get("changeType")), tail])
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class IngestResult:
    accepted: int = 0
    lifecycle: int = 0
    rejected: Counter = field(default_factory=Counter)
    job_id: int | None = None


@functools.lru_cache(maxsize=10_000)
def _client_state(ciphertext: str) -> bytes:
    """Decrypted clientState, cached per process by its ciphertext: Fernet decryption is
    the receiver's most expensive step and the same subscriptions notify again and again.
    A recreated subscription has a new ciphertext, so the cache never serves a stale value."""

    return decrypt(ciphertext).encode("utf-8")


def ingest(endpoint: str, items: list[dict[str, Any]], *, remote_addr: str = "") -> IngestResult:
    """Verify each item's clientState and store the valid ones with their job(s).

    Raises DatabaseError when nothing could be stored (the view answers 503).
    """

    result = IngestResult()
    now = timezone.now()
    ids = {i["subscriptionId"] for i in items if _SUBSCRIPTION_ID.fullmatch(i["subscriptionId"])}
    subs = (
        {
            s.graph_id: s
            for s in Subscription.objects.filter(graph_id__in=ids).only(
                "id", "graph_id", "kind", "monitored_user_id", "client_state_encrypted"
            )
        }
        if ids
        else {}
    )
    secrets_by_sub: dict[str, bytes | None] = {}
    changes: list[tuple[Subscription, dict[str, Any]]] = []
    events: list[tuple[Subscription, dict[str, Any]]] = []
    last_bad = ""
    for item in items:
        sub_id = item["subscriptionId"]
        sub = subs.get(sub_id)
        given = _secret_bytes(item.get("clientState"))
        if sub is not None and sub_id not in secrets_by_sub:
            try:
                secrets_by_sub[sub_id] = _client_state(sub.client_state_encrypted)
            except DecryptionError:
                secrets_by_sub[sub_id] = None
                logger.error(
                    "Webhook: clientState of subscription %s cannot be decrypted "
                    "(FIELD_ENCRYPTION_KEYS?)",
                    sub_id,
                )
        expected = secrets_by_sub.get(sub_id) if sub is not None else None
        # compare_digest takes time independent of where the bytes differ.
        valid = expected is not None and given is not None and hmac.compare_digest(expected, given)
        if not valid:
            reason = (
                WebhookRejection.Reason.UNKNOWN_SUBSCRIPTION
                if sub is None
                else WebhookRejection.Reason.CLIENT_STATE_MISMATCH
            )
            result.rejected[reason] += 1
            last_bad = _clean(sub_id, 64)
            # Never log the clientState itself.
            logger.warning(
                "Webhook security event: %s on /api/webhooks/%s (subscription %r, "
                "from %s); notification refused",
                reason,
                endpoint,
                last_bad,
                remote_addr or "?",
            )
            continue
        if "lifecycleEvent" in item:
            events.append((sub, item))
        else:
            changes.append((sub, item))

    with transaction.atomic():
        if changes:
            batch = uuid.uuid4().hex
            job = enqueue(
                PROCESS_JOB,
                {"batch": batch},
                created_by=f"webhook:{endpoint}",
                correlation_id=batch,
            )
            result.job_id = job.pk
            rows = []
            for sub, item in changes:
                data = (
                    item.get("resourceData") if isinstance(item.get("resourceData"), dict) else {}
                )
                rows.append(
                    NotificationInbox(
                        dedupe_key=dedupe_key(item, now),
                        batch=batch,
                        subscription_id=sub.pk,
                        subscription_graph_id=sub.graph_id,
                        monitored_user_id=sub.monitored_user_id,
                        kind=sub.kind,
                        change_type=_clean(item.get("changeType"), 20),
                        resource=_clean(item.get("resource"), 500),
                        resource_id=_clean(data.get("id"), 255),
                        etag=_clean(data.get("@odata.etag"), 200),
                        received_at=now,
                        job=job,
                    )
                )
            # ON CONFLICT DO NOTHING: a redelivered notification is absorbed here.
            NotificationInbox.objects.bulk_create(rows, ignore_conflicts=True)
            result.accepted = len(rows)
        for sub, item in events:
            if _store_lifecycle_event(sub, item, now, enqueue):
                result.lifecycle += 1
        for reason, count in result.rejected.items():
            _count_rejection(endpoint, reason, count, last_bad, remote_addr, now)
    return result


def _store_lifecycle_event(sub: Subscription, item: dict[str, Any], now: Any, enqueue: Any) -> bool:
    name = item["lifecycleEvent"] if _EVENT_NAME.fullmatch(item["lifecycleEvent"]) else "unknown"
    expiration = item.get("subscriptionExpirationDateTime")
    # Graph repeats reauthorizationRequired on purpose (every ~15 min near expiry), so only
    # a redelivery within the same 5 minutes counts as a duplicate.
    bucket = int(now.timestamp() // 300)
    key = hashlib.sha256(
        f"{sub.graph_id}|{name}|{expiration}|{bucket}".encode("utf-8", "surrogatepass")
    ).hexdigest()
    try:
        with transaction.atomic():
            event = LifecycleEvent.objects.create(
                subscription_id=sub.pk,
                subscription_graph_id=sub.graph_id,
                event=name,
                subscription_expiration=parse_graph_datetime(expiration)
                if isinstance(expiration, str)
                else None,
                dedupe_key=key,
                received_at=now,
            )
    except IntegrityError:
        return False
    job = enqueue(
        LIFECYCLE_JOB,
        {"event": event.pk},
        created_by="webhook:lifecycle",
        idempotency_key=f"{LIFECYCLE_JOB}:{event.pk}",
    )
    LifecycleEvent.objects.filter(pk=event.pk).update(job=job)
    return True


def _count_rejection(
    endpoint: str, reason: str, count: int, sub_id: str, remote_addr: str, now: Any
) -> None:
    day = timezone.localdate(now)
    fields = {
        "last_seen_at": now,
        "last_subscription_id": sub_id,
        "last_remote_addr": remote_addr[:45],
    }
    match = WebhookRejection.objects.filter(day=day, endpoint=endpoint, reason=reason)
    if match.update(count=F("count") + count, **fields):
        return
    try:
        with transaction.atomic():
            WebhookRejection.objects.create(
                day=day, endpoint=endpoint, reason=reason, count=count, first_seen_at=now, **fields
            )
    except IntegrityError:  # created concurrently
        match.update(count=F("count") + count, **fields)


# --------------------------------------------------------------------------- worker path


def process_batch(batch: str) -> dict[str, int]:
    """Turn a batch of stored notifications into sync work. Safe to run twice: only rows
    still pending are taken, with a conditional UPDATE."""

    rows = list(
        NotificationInbox.objects.filter(
            batch=batch, status=NotificationInbox.Status.PENDING
        ).values_list("id", "monitored_user_id", "kind", "subscription_id")
    )
    if not rows:
        return {"processed": 0}
    realtime = bool(get("ENABLE_REALTIME_SYNC"))
    now = timezone.now()
    targets: dict[tuple[int, str], list[int]] = {}
    orphans = []
    for row_id, user_id, kind, sub_id in rows:
        if user_id is None or sub_id is None:
            orphans.append(row_id)
        else:
            targets.setdefault((user_id, kind), []).append(row_id)
    pending = NotificationInbox.objects.filter(status=NotificationInbox.Status.PENDING)
    if orphans:
        pending.filter(pk__in=orphans).update(
            status=NotificationInbox.Status.IGNORED, processed_at=now
        )
    for (user_id, kind), row_ids in targets.items():
        with transaction.atomic():
            if realtime:
                job = sync.request_delta(
                    user_id, kind, trigger="notification", created_by="notification"
                )
                pending.filter(pk__in=row_ids).update(
                    status=NotificationInbox.Status.PROCESSED, processed_at=now, sync_job=job
                )
            else:
                sync.mark_due(user_id, kind)
                pending.filter(pk__in=row_ids).update(
                    status=NotificationInbox.Status.PROCESSED, processed_at=now
                )
    # Per-subscription "last notification received", kept off the request path (a hot row).
    latest = (
        NotificationInbox.objects.filter(batch=batch, subscription_id__isnull=False)
        .values("subscription_id")
        .annotate(at=Max("received_at"))
    )
    for entry in latest:
        Subscription.objects.filter(pk=entry["subscription_id"]).exclude(
            last_notification_at__gte=entry["at"]
        ).update(last_notification_at=entry["at"])
    return {
        "processed": len(rows) - len(orphans),
        "ignored": len(orphans),
        "targets": len(targets),
        "realtime": int(realtime),
    }
