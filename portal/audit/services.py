"""`record()` is the one way to write the audit log."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from portal.access.actors import Actor
from portal.audit.chain import GENESIS_HASH, compute_hash, signing_key
from portal.audit.models import AuditEvent
from portal.lib.dbtext import without_nul
from portal.lib.redaction import mask_secrets, redact_text

# Arbitrary fixed key for pg_advisory_xact_lock: one writer appends to the chain at a time.
_CHAIN_LOCK_KEY = 7_401_305_113


def lock_chain() -> None:
    """Serialise appends to the chain (events, and checkpoints) until the transaction ends."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
    # SQLite runs every transaction as BEGIN IMMEDIATE (settings.py), which already holds the
    # database's single write lock until commit.


def record(
    action: str,
    *,
    actor: Actor,
    target_type: str = "",
    target_id: Any = "",
    params: dict[str, Any] | None = None,
    outcome: str = AuditEvent.Outcome.SUCCESS,
    reason: str = "",
) -> AuditEvent:
    """Append one event. Runs in the caller's transaction when there is one."""
    # Round-trip through JSON so what is stored is exactly what was hashed.
    safe_params = json.loads(json.dumps(mask_secrets(params or {})))
    values = {
        "created_at": timezone.now(),
        "actor_type": actor.kind,
        "actor_id": actor.actor_id,
        "actor_name": actor.name[:150],
        "actor_role": actor.role,
        "action": action,
        "target_type": target_type,
        "target_id": str(target_id)[:255],
        "params": safe_params,
        "outcome": str(outcome),
        "reason": redact_text(reason)[:2000],
        "ip": actor.ip,
        "user_agent": actor.user_agent,
        "request_id": actor.request_id,
    }
    values = {name: without_nul(value) for name, value in values.items()}
    key = signing_key()
    with transaction.atomic():
        lock_chain()
        prev_hash = (
            AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
            or GENESIS_HASH
        )
        return AuditEvent.objects.create(
            prev_hash=prev_hash, hash=compute_hash(prev_hash, values, key), key_id=key.id, **values
        )
