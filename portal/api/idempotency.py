"""The Idempotency-Key header (IETF httpapi draft "The Idempotency-Key HTTP Header Field").

- The key is required on the endpoints that use it (400 without it).
- First use: a record is committed as *processing* before the work starts, so a concurrent
  request with the same key answers 409 instead of doing the work twice.
- The same key with the same body (fingerprint: SHA-256 of the canonical JSON) returns what
  the first request created, with its status code; a different body is 422.
- Keys are per principal (a service client, or a person's token) and endpoint, kept at least
  API_IDEMPOTENCY_TTL_HOURS (default 24); an expired key may be used again.
- A request that fails before creating anything releases its key (it may be retried).
- A record left *processing* by a crashed request is taken over after PROCESSING_STALE.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from portal.access.actors import Actor
from portal.api.framework import ApiError
from portal.api.models import IdempotencyRecord

HEADER = "Idempotency-Key"
SEND_ENDPOINT = "POST /api/messages"  # the endpoint whose keys name messages
PROCESSING_STALE = timedelta(seconds=60)
_VALID = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass
class Claim:
    record: IdempotencyRecord
    replay: bool  # True: the key was used before; record holds the first answer


def ttl() -> timedelta:
    return timedelta(hours=float(settings.API_IDEMPOTENCY_TTL_HOURS))


def key_from(request: HttpRequest) -> str:
    """The request's key (a Structured Fields string: quoted; bare tokens are accepted too)."""
    raw = request.headers.get(HEADER)
    if raw is None or not raw.strip():
        raise ApiError(
            400,
            "idempotency_key_required",
            f"Send an {HEADER} header (a unique string per request, e.g. a UUID); "
            "retries of the same request use the same key.",
        )
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not _VALID.match(value):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"{HEADER} must be 1-255 printable ASCII characters without spaces.",
        )
    return value


def owner_of(actor: Actor) -> str:
    if actor.client is not None:
        return f"client:{actor.client.pk}"
    if actor.user is not None:
        return f"user:{actor.user.pk}"
    return f"{actor.kind}:{actor.name}"[:64]


def fingerprint(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def claim(actor: Actor, endpoint: str, key: str, body: dict[str, Any]) -> Claim:
    """Take the key for this request (committed at once), or return the first answer.

    Raises ApiError 409 (the first request is still processing) or 422 (another body).
    """
    owner, print_ = owner_of(actor), fingerprint(body)
    now = timezone.now()
    with transaction.atomic():
        record = (
            IdempotencyRecord.objects.select_for_update()
            .filter(owner=owner, endpoint=endpoint, key=key)
            .first()
        )
        if record is not None and record.expires_at <= now:
            record.delete()
            record = None
        if record is not None:
            if record.fingerprint != print_:
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    f"This {HEADER} was used with a different request body; use "
                    "a new key for a new request.",
                )
            if record.state == IdempotencyRecord.State.DONE:
                return Claim(record, replay=True)
            if now - record.created_at < PROCESSING_STALE:
                raise ApiError(
                    409,
                    "idempotency_key_in_use",
                    "A request with this Idempotency-Key is still being processed; retry later.",
                )
            # Left behind by a request that died: this one takes over.
            IdempotencyRecord.objects.filter(pk=record.pk).update(created_at=now)
            return Claim(record, replay=False)
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    owner=owner,
                    endpoint=endpoint,
                    key=key,
                    fingerprint=print_,
                    created_at=now,
                    expires_at=now + ttl(),
                )
        except IntegrityError:
            raise ApiError(
                409,
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is being processed; retry later.",
            ) from None
    return Claim(record, replay=False)


def complete(record: IdempotencyRecord, status: int, resource_id: int) -> None:
    """Record the first answer (call inside the transaction that creates the resource)."""
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        state=IdempotencyRecord.State.DONE, response_status=status, resource_id=resource_id
    )
    record.state, record.response_status, record.resource_id = (
        IdempotencyRecord.State.DONE,
        status,
        resource_id,
    )


def release(record: IdempotencyRecord) -> None:
    """The request failed before creating anything: the key may be used again."""
    IdempotencyRecord.objects.filter(
        pk=record.pk, state=IdempotencyRecord.State.PROCESSING
    ).delete()


@dataclass(frozen=True)
class Answer:
    resource_id: int
    status: int  # 202 the first time; a replay answers what the first request answered
    replayed: bool


def once(
    actor: Actor, endpoint: str, key: str, body: dict[str, Any], create: Callable[[], int]
) -> Answer:
    """Run `create` (which returns the new resource's id) once per key: claim the key, create
    and record the answer in one transaction, or return the first answer. A failure releases
    the key. Raises ApiError 409 or 422 as claim() does."""
    taken = claim(actor, endpoint, key, body)
    if taken.replay:
        # A replayed claim is a DONE record, and complete() made it DONE with the resource.
        assert taken.record.resource_id is not None
        return Answer(taken.record.resource_id, taken.record.response_status or 202, True)
    try:
        with transaction.atomic():
            resource_id = create()
            complete(taken.record, 202, resource_id)
    except BaseException:
        release(taken.record)
        raise
    return Answer(resource_id, 202, False)
