"""Change notifications: the receiver's fast path (parse, verify, store).

In the request ("Receive change notifications through webhooks": answer within 3 seconds): no Graph
call, the
subscriptions' clientStates from a short per-process cache (one SELECT on a miss), each
compared in constant time, then one multi-row INSERT … ON CONFLICT DO NOTHING of inbox rows
on their dedupe key, committed. Lifecycle notifications and the security counters add a
statement each, in the same transaction, when a request carries them. Either all of it
commits or the view answers 503 and Graph retries. What happens next is the drain's
(integrations/microsoft/inbox.py): the inbox is the queue.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from integrations.graph.kinds import parse_graph_datetime
from integrations.microsoft.models import (
    LifecycleEvent,
    NotificationAnswers,
    NotificationInbox,
    Subscription,
    WebhookRejection,
)
from portal.jobs.broker import notify
from portal.lib.crypto import DecryptionError, decrypt
from portal.lib.tracing import current_traceparent

logger = logging.getLogger(__name__)

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


def parse_body(raw: bytes) -> Parsed:  # noqa: C901 (each malformed shape of an untrusted body has its own reason)
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
    resource_data = item.get("resourceData")
    data = resource_data if isinstance(resource_data, dict) else {}
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


@functools.lru_cache(maxsize=10_000)
def _client_state(ciphertext: str) -> bytes:
    """Decrypted clientState, cached per process by its ciphertext: Fernet decryption is
    the receiver's most expensive step and the same subscriptions notify again and again.
    A recreated subscription has a new ciphertext, so the cache never serves a stale value."""
    return decrypt(ciphertext).encode("utf-8")


# graph id -> (monotonic expiry, decrypted clientState or None when it cannot be decrypted).
# Graph never reuses a subscription id nor changes a clientState, so an entry can only go
# stale by the subscription's deletion: saves and deletes in this process drop it at once
# (the signal below), other processes after WEBHOOK_SUBSCRIPTION_CACHE_SECONDS. A
# notification for a just-deleted subscription that still passes here finds no subscription
# row in the INSERT's join and is not stored.
_known: dict[str, tuple[float, bytes | None]] = {}
_KNOWN_MAX = 10_000


def forget_subscription(graph_id: str | None = None) -> None:
    """Drop the receiver's cached clientState of one subscription (None: of all)."""
    if graph_id is None:
        _known.clear()
    else:
        _known.pop(graph_id, None)


@receiver([post_save, post_delete], sender=Subscription)
def _subscription_changed(sender: Any, instance: Subscription, **kwargs: Any) -> None:
    forget_subscription(instance.graph_id)


def _secrets(ids: set[str]) -> dict[str, bytes | None]:
    """The clientState of each known subscription among `ids`; unknown ids are left out.

    One indexed SELECT for the ids not cached (none, once the subscriptions are warm)."""
    ttl = float(settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS)
    clock = time.monotonic()
    found: dict[str, bytes | None] = {}
    missing = []
    for graph_id in ids:
        hit = _known.get(graph_id)
        if hit is not None and hit[0] > clock:
            found[graph_id] = hit[1]
        else:
            missing.append(graph_id)
    if not missing:
        return found
    if len(_known) > _KNOWN_MAX:
        _known.clear()
    rows = Subscription.objects.filter(graph_id__in=missing).values_list(
        "graph_id", "client_state_encrypted"
    )
    for known_id, ciphertext in rows:
        if known_id is None:
            continue
        try:
            secret: bytes | None = _client_state(ciphertext)
        except DecryptionError:
            secret = None
            logger.error(
                "Webhook: clientState of subscription %s cannot be decrypted "
                "(FIELD_ENCRYPTION_KEYS?)",
                known_id,
            )
        found[known_id] = secret
        if ttl > 0:
            _known[known_id] = (clock + ttl, secret)
    return found


CREATING_WINDOW_MINUTES = 5
CREATING_ROWS_CHECKED = 50


class NotYetKnown(Exception):
    """A notification for a subscription whose create call has not returned yet: the view
    answers 503 and Graph redelivers it (with backoff, for hours) once the id is stored."""


def _creating_secrets() -> list[bytes]:
    """The clientStates of subscriptions whose create call has not returned yet.

    Graph may notify for a new subscription before the POST /subscriptions that made it has
    returned and the portal has stored its id (seen right after a recreation). Such a
    notification carries the clientState of a row still CREATING: it is ours and must not be
    dropped as unknown. Only recent rows count (a create takes seconds; a row left CREATING
    by a crash must not make Graph retry for hours), a handful at most."""
    recent = timezone.now() - timedelta(minutes=CREATING_WINDOW_MINUTES)
    rows = Subscription.objects.filter(
        state=Subscription.State.CREATING, graph_id__isnull=True, created_at__gte=recent
    ).values_list("client_state_encrypted", flat=True)[:CREATING_ROWS_CHECKED]
    secrets = []
    for ciphertext in rows:
        try:
            secrets.append(_client_state(ciphertext))
        except DecryptionError:
            continue
    return secrets


def ingest(endpoint: str, items: list[dict[str, Any]], *, remote_addr: str = "") -> IngestResult:
    """Verify each item's clientState and store the valid ones: that is all.

    The inbox is the queue (integrations/microsoft/inbox.py drains it): a request writes its
    change notifications with ONE multi-row INSERT … ON CONFLICT DO NOTHING (and its
    lifecycle notifications with another), commits and is done — no job, no broker row.
    Raises DatabaseError when nothing could be stored and NotYetKnown for a subscription
    still being created (the view answers 503 to both; nothing of the request is stored).
    """
    result = IngestResult()
    now = timezone.now()
    ids = {i["subscriptionId"] for i in items if _SUBSCRIPTION_ID.fullmatch(i["subscriptionId"])}
    secrets = _secrets(ids) if ids else {}
    changes: list[tuple[str, ...]] = []
    events: list[tuple[Any, ...]] = []
    last_bad = ""
    creating: list[bytes] | None = None
    for item in items:
        sub_id = item["subscriptionId"]
        known = sub_id in secrets
        expected = secrets.get(sub_id)
        given = _secret_bytes(item.get("clientState"))
        # compare_digest takes time independent of where the bytes differ.
        valid = expected is not None and given is not None and hmac.compare_digest(expected, given)
        if not valid and not known and given is not None:
            if creating is None:  # looked up once per request, only for unknown ids
                creating = _creating_secrets()
            # compare_digest with each (no early exit on the first match).
            if sum(hmac.compare_digest(secret, given) for secret in creating):
                raise NotYetKnown(_clean(sub_id, 64))
        if not valid:
            reason = (
                WebhookRejection.Reason.CLIENT_STATE_MISMATCH
                if known
                else WebhookRejection.Reason.UNKNOWN_SUBSCRIPTION
            )
            result.rejected[reason] += 1
            last_bad = _clean(sub_id, 64)
            continue
        if "lifecycleEvent" in item:
            events.append(_lifecycle_row(sub_id, item, now))
        else:
            resource_data = item.get("resourceData")
            data = resource_data if isinstance(resource_data, dict) else {}
            changes.append(
                (
                    dedupe_key(item, now),
                    sub_id,
                    _clean(item.get("changeType"), 20),
                    _clean(item.get("resource"), 500),
                    _clean(data.get("id"), 255),
                    _clean(data.get("@odata.etag"), 200),
                )
            )
    if result.rejected:
        # One line per request, not per item: a request may carry MAX_ITEMS forged ones.
        # Never the clientState itself.
        logger.warning(
            "Webhook security event on /api/webhooks/%s from %s: %d of %d notifications "
            "refused (%s; last subscription %r)",
            endpoint,
            remote_addr or "?",
            result.rejected.total(),
            len(items),
            ", ".join(f"{reason}: {n}" for reason, n in sorted(result.rejected.items())),
            last_bad,
        )
    statements = bool(changes) + bool(events) + bool(result.rejected)
    if not statements:
        return result
    # A single statement commits on its own (autocommit): no BEGIN/COMMIT round trips.
    with transaction.atomic() if statements > 1 else contextlib.nullcontext():
        if changes:
            _insert_notifications(changes, batch=uuid.uuid4().hex, received_at=now)
            result.accepted = len(changes)
        if events:
            _insert_lifecycle_events(events, received_at=now)
            result.lifecycle = len(events)
        for reason, count in result.rejected.items():
            _count_rejection(endpoint, reason, count, last_bad, remote_addr, now)
    if changes or events:
        wake_drains()
    return result


# The drains LISTEN on this channel (inbox.py). NOTIFY is not sent in the INSERT's
# transaction: PostgreSQL holds a database-wide lock from a notifying transaction's commit
# until it is durable, so notifying commits cannot share an fsync (measured: a NOTIFY trigger
# on the inbox cut concurrent inserts from ~1,100/s to ~300/s). Instead each request sends
# one after its commit: a NOTIFY alone writes no WAL, so it costs a round trip (~0.1 ms).
CHANNEL = "fleet_inbox"


def wake_drains() -> None:
    """Wake the inbox drains (PostgreSQL); never fails the request, whose rows committed."""
    notify(CHANNEL)


def _lifecycle_row(sub_id: str, item: dict[str, Any], now: Any) -> tuple[Any, ...]:
    """(dedupe key, subscription graph id, event, subscription expiration) of a lifecycle
    notification."""
    name = item["lifecycleEvent"] if _EVENT_NAME.fullmatch(item["lifecycleEvent"]) else "unknown"
    expiration = item.get("subscriptionExpirationDateTime")
    # Graph repeats reauthorizationRequired on purpose (every ~15 min near expiry), so only
    # a redelivery within the same 5 minutes counts as a duplicate.
    bucket = int(now.timestamp() // 300)
    key = hashlib.sha256(
        f"{sub_id}|{name}|{expiration}|{bucket}".encode("utf-8", "surrogatepass")
    ).hexdigest()
    parsed = parse_graph_datetime(expiration) if isinstance(expiration, str) else None
    return (key, sub_id, name, parsed)


def _timestamp_sql() -> str:
    # PostgreSQL types a NULL-only VALUES column as text; SQLite stores the adapted text.
    return "CAST(%s AS timestamp with time zone)" if connection.vendor == "postgresql" else "%s"


def _insert_notifications(rows: list[tuple[str, ...]], *, batch: str, received_at: Any) -> None:
    """ONE statement: INSERT … SELECT … JOIN subscription … ON CONFLICT DO NOTHING. The join
    takes the subscription's own id, user and kind at insert time (so a cached clientState
    can never attach a row to the wrong subscription, and a deleted one's rows are dropped),
    and a redelivered notification is absorbed by the unique dedupe key.

    On PostgreSQL the rows travel as one JSON parameter (json_to_recordset): the statement
    text is the same for any batch size, so the driver's parsed-query cache serves it, and
    json.dumps is C — binding 6 parameters per row was a third of a batch of 10's CPU.

    rows: (dedupe key, subscription graph id, change type, resource, resource id, etag)."""
    inbox, subs = NotificationInbox._meta.db_table, Subscription._meta.db_table
    columns = (
        f"INSERT INTO {inbox} (dedupe_key, batch, subscription_id, subscription_graph_id, "
        "monitored_user_id, kind, change_type, resource, resource_id, etag, received_at, "
        "status, trace_context) "
    )
    params: list[Any] = [batch, connection.ops.adapt_datetimefield_value(received_at)]
    # The drain continues the request's trace (portal/lib/tracing.py).
    params += [NotificationInbox.Status.PENDING, current_traceparent()]
    if connection.vendor == "postgresql":
        sql = (
            # Table names from the models; every value is a parameter.
            f"{columns}SELECT v.k, %s, s.id, s.graph_id, s.monitored_user_id, s.kind, v.c, "  # noqa: S608
            "v.r, v.i, v.e, %s, %s, %s FROM json_to_recordset(%s::json) "
            "AS v(k text, g text, c text, r text, i text, e text) "
            f"JOIN {subs} s ON s.graph_id = v.g ON CONFLICT (dedupe_key) DO NOTHING"
        )
        params.append(json.dumps([dict(zip("kgcrie", row, strict=True)) for row in rows]))
    else:
        values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows))
        sql = (
            f"{columns}SELECT v.column1, %s, s.id, s.graph_id, s.monitored_user_id, s.kind, "  # noqa: S608
            "v.column3, v.column4, v.column5, v.column6, %s, %s, %s "
            f"FROM (VALUES {values}) AS v JOIN {subs} s ON s.graph_id = v.column2 "
            # SQLite needs a WHERE before ON CONFLICT in INSERT … SELECT (parsing ambiguity).
            "WHERE 1 = 1 ON CONFLICT (dedupe_key) DO NOTHING"
        )
        for row in rows:
            params.extend(row)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _insert_lifecycle_events(rows: list[tuple[Any, ...]], *, received_at: Any) -> None:
    """The lifecycle rows the same way (the drain enqueues their jobs).

    rows: (dedupe key, subscription graph id, event, subscription expiration or None)."""
    events, subs = LifecycleEvent._meta.db_table, Subscription._meta.db_table
    stamp = _timestamp_sql()
    values = ", ".join([f"(%s, %s, %s, {stamp})"] * len(rows))
    sql = (
        f"INSERT INTO {events} (dedupe_key, subscription_id, subscription_graph_id, event, "  # noqa: S608
        "subscription_expiration, received_at, status, outcome) "
        f"SELECT v.column1, s.id, s.graph_id, v.column3, v.column4, {stamp}, %s, '' "
        f"FROM (VALUES {values}) AS v JOIN {subs} s ON s.graph_id = v.column2 "
        "WHERE 1 = 1 ON CONFLICT (dedupe_key) DO NOTHING"
    )
    adapt = connection.ops.adapt_datetimefield_value
    params: list[Any] = [adapt(received_at), LifecycleEvent.Status.RECEIVED]
    for key, sub_id, name, expiration in rows:
        params.extend((key, sub_id, name, adapt(expiration)))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


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


# Answers are counted in this process and written at most once a second (one upsert per
# minute that has counts), so the receiver's request stays one statement: a row updated by
# every request would serialise the receivers on its lock.
ANSWER_FLUSH_SECONDS = 1.0
_answers_lock = threading.Lock()
_answers: dict[datetime, list[int]] = {}  # minute → [answered, slow]
_answers_flushed = 0.0


def record_answer(seconds: float) -> None:
    """Count one answered notification request in its minute, and whether it was slow
    (slower than NOTIFICATION_SLOW_ANSWER_SECONDS)."""
    global _answers_flushed
    minute = timezone.now().replace(second=0, microsecond=0)
    with _answers_lock:
        counts = _answers.setdefault(minute, [0, 0])
        counts[0] += 1
        counts[1] += int(seconds > settings.NOTIFICATION_SLOW_ANSWER_SECONDS)
        if time.monotonic() - _answers_flushed < ANSWER_FLUSH_SECONDS:
            return
    flush_answers()


def flush_answers() -> None:
    """Write this process's counted answers (a failure keeps them for the next flush and
    is logged, never turned into an error for Graph)."""
    global _answers, _answers_flushed
    with _answers_lock:
        pending, _answers = _answers, {}
        _answers_flushed = time.monotonic()
    if not pending:
        return
    table = NotificationAnswers._meta.db_table
    try:
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {table} (minute, answered, slow) VALUES (%s, %s, %s) "  # noqa: S608
                f"ON CONFLICT (minute) DO UPDATE SET "
                f"answered = {table}.answered + excluded.answered, "
                f"slow = {table}.slow + excluded.slow",
                [(minute, answered, slow) for minute, (answered, slow) in pending.items()],
            )
    except DatabaseError:
        logger.warning("Could not store notification answer counts", exc_info=True)
        with _answers_lock:
            for minute, (answered, slow) in pending.items():
                counts = _answers.setdefault(minute, [0, 0])
                counts[0] += answered
                counts[1] += slow


def forget_answers() -> None:
    """Drop the counts not written yet (tests start each from nothing)."""
    global _answers
    with _answers_lock:
        _answers = {}
