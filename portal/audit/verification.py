"""Verifying the audit log: the chain, then the newest checkpoint, then a new checkpoint.

Every verification (verify_audit_chain, the hourly schedule) goes through `verify_chain`.
The chain alone cannot show that its newest rows were deleted or the table truncated (what
is left still chains), so each passing verification records a checkpoint and the next one
compares: fewer events than the checkpoint counted, or another hash at its newest event,
is a break. Listeners of `chain_verified` (the alerts app) raise the alarm.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

import django.dispatch
from django.utils import timezone

from portal.audit.chain import ChainKey, ChainProblem, keyring, signing_key, walk
from portal.audit.models import AuditCheckpoint, AuditEvent

logger = logging.getLogger(__name__)

# Sent after every verification with `result` (a Verification).
chain_verified = django.dispatch.Signal()


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    problem: ChainProblem | None
    checkpoint: AuditCheckpoint | None  # the one recorded now (None when broken)
    compared_with: AuditCheckpoint | None

    @property
    def message(self) -> str:
        if self.problem is not None:
            return f"Audit chain BROKEN at event #{self.problem.event_id}: {self.problem.problem}."
        return f"Audit chain intact: {self.events} events verified."


def _checkpoint_message(
    event_id: int | None, event_hash: str, count: int, created_at_iso: str
) -> str:
    return f"checkpoint\n{event_id or ''}\n{event_hash}\n{count}\n{created_at_iso}"


def checkpoint_mac(key: ChainKey, checkpoint: AuditCheckpoint) -> str:
    return key.digest(
        _checkpoint_message(
            checkpoint.event_id,
            checkpoint.event_hash,
            checkpoint.event_count,
            checkpoint.created_at.isoformat(timespec="microseconds"),
        )
    )


def _signed(ring: dict[str, ChainKey], checkpoint: AuditCheckpoint) -> bool:
    key = ring.get(checkpoint.key_id)
    return (
        key is not None
        and key.secret is not None
        and hmac.compare_digest(checkpoint_mac(key, checkpoint), checkpoint.mac)
    )


def new_checkpoint(
    model: type[AuditCheckpoint],
    key: ChainKey,
    event_id: int | None,
    event_hash: str,
    count: int,
    source: str,
) -> AuditCheckpoint:
    """A signed, unsaved checkpoint (the keying migration passes its historical model)."""
    checkpoint = model(
        created_at=timezone.now(),
        event_id=event_id,
        event_hash=event_hash,
        event_count=count,
        source=source[:64],
        key_id=key.id,
    )
    checkpoint.mac = checkpoint_mac(key, checkpoint)
    return checkpoint


def _against_checkpoint(
    checked: int, ring: dict[str, ChainKey], checkpoint: AuditCheckpoint
) -> ChainProblem | None:
    if not _signed(ring, checkpoint):
        return ChainProblem(
            checkpoint.event_id or 0,
            f"checkpoint #{checkpoint.pk} is not signed by a listed key "
            "(forged, or its key was removed from AUDIT_CHAIN_KEY)",
        )
    if checked < checkpoint.event_count:
        return ChainProblem(
            checkpoint.event_id or 0,
            f"the log holds {checked} events, fewer than the "
            f"{checkpoint.event_count} seen at checkpoint #{checkpoint.pk} "
            f"({checkpoint.created_at:%Y-%m-%d %H:%M} UTC): events were "
            "deleted or the table was truncated",
        )
    if checkpoint.event_id is not None:
        stored = (
            AuditEvent.objects.filter(pk=checkpoint.event_id).values_list("hash", flat=True).first()
        )
        if stored != checkpoint.event_hash:
            return ChainProblem(
                checkpoint.event_id,
                f"it is {'gone' if stored is None else 'not the event'} "
                f"checkpoint #{checkpoint.pk} saw (rewritten)",
            )
    return None


def verify_chain(source: str = "") -> Verification:
    """Verify the whole chain and the newest checkpoint; record a checkpoint if it passes."""
    ring = keyring()
    first = AuditCheckpoint.objects.order_by("id").first()
    legacy_until = None
    if first is not None and _signed(ring, first):
        legacy_until = first.event_id or 0
    result = walk(AuditEvent.objects.order_by("id").iterator(chunk_size=5000), ring, legacy_until)
    previous = AuditCheckpoint.objects.order_by("-id").first()
    problem = result.problem
    if problem is None and previous is not None:
        problem = _against_checkpoint(result.checked, ring, previous)
    recorded = None
    if problem is None:
        # A checkpoint vouches only for a log that verified: after a break the last good one
        # stays the reference, so the alarm keeps firing until someone investigates.
        recorded = new_checkpoint(
            AuditCheckpoint, signing_key(), result.last_id, result.last_hash, result.checked, source
        )
        recorded.save()
    verification = Verification(
        ok=problem is None,
        events=result.checked,
        problem=problem,
        checkpoint=recorded,
        compared_with=previous,
    )
    # In the logs too, so a copy outside the database exists (log shipping keeps it).
    logger.log(
        logging.INFO if verification.ok else logging.ERROR,
        verification.message,
        extra={
            "audit_events": result.checked,
            "audit_last_id": result.last_id,
            "audit_last_hash": result.last_hash,
        },
    )
    chain_verified.send(sender=AuditCheckpoint, result=verification)
    return verification
