"""`record()` is the one way to write the audit log."""

from __future__ import annotations

import json
import re
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from portal.access.actors import Actor
from portal.audit.chain import GENESIS_HASH, compute_hash
from portal.audit.models import AuditEvent

MASK = "••••••"
_SECRET_KEY_PATTERN = re.compile(
    r"secret|password|passwd|token|credential|authorization|api[_-]?key|client[_-]?state|"
    r"cookie|private|refresh|cache",
    re.IGNORECASE,
)
# Any value that looks like one of our API tokens is masked wherever it appears.
_TOKEN_VALUE_PATTERN = re.compile(r"\bfgp_[A-Za-z0-9_-]{8,}")
# Arbitrary fixed key for pg_advisory_xact_lock: one writer appends to the chain at a time.
_CHAIN_LOCK_KEY = 7_401_305_113


def mask_secrets(value: Any) -> Any:
    """A copy of value with secret-looking keys masked, in JSON-safe types."""
    if isinstance(value, dict):
        return {
            str(key): MASK if _SECRET_KEY_PATTERN.search(str(key)) else mask_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_secrets(item) for item in value]
    if isinstance(value, str):
        return _TOKEN_VALUE_PATTERN.sub(MASK, value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


def _lock_chain() -> None:
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
        "reason": mask_secrets(reason)[:2000],
        "ip": actor.ip,
        "user_agent": actor.user_agent,
        "request_id": actor.request_id,
    }
    with transaction.atomic():
        _lock_chain()
        prev_hash = (
            AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
            or GENESIS_HASH
        )
        return AuditEvent.objects.create(
            prev_hash=prev_hash, hash=compute_hash(prev_hash, values), **values
        )
