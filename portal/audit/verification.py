"""Verifying the audit log: the chain, the checkpoints, the copy outside; then a new checkpoint.

Every verification (verify_audit_chain, the hourly schedule) goes through `verify_chain`.
The event chain alone cannot show that its newest rows were deleted or the table truncated
(what is left still chains), so each passing verification records a checkpoint and the next
one compares: fewer events than the checkpoint counted, or another hash at its newest event,
is a break. Checkpoints chain among themselves (portal/audit/records.py), so one deleted from
the middle is a break; and each is also written outside the database (the log, and
AUDIT_CHECKPOINT_FILE), because someone who deletes the newest events *and* the newest
checkpoints leaves a database that agrees with itself: only the copy outside shows it.
Listeners of `chain_verified` (the alerts app) raise the alarm.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django.dispatch
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.audit import records
from portal.audit.chain import ChainKey, ChainProblem, keyring, signing_key, walk
from portal.audit.models import AuditCheckpoint, AuditEvent
from portal.audit.services import lock_chain

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


def checkpoint_values(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    return {name: getattr(checkpoint, name) for name in records.CHECKPOINT_FIELDS}


def event_values(event: AuditEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in records.EVENT_FIELDS}


def checkpoint_mac(key: ChainKey, checkpoint: AuditCheckpoint) -> str:
    return records.checkpoint_mac(key, checkpoint_values(checkpoint))


def new_checkpoint(
    model: type[AuditCheckpoint],
    key: ChainKey,
    event_id: int | None,
    event_hash: str,
    count: int,
    source: str,
) -> AuditCheckpoint:
    """A signed, unsaved, unchained (version 1) checkpoint, as the keying migration writes
    with its historical model; verifications write chained ones."""
    checkpoint = model(
        created_at=timezone.now(),
        event_id=event_id,
        event_hash=event_hash,
        event_count=count,
        source=source[:64],
        key_id=key.id,
    )
    checkpoint.mac = records.checkpoint_mac(
        key,
        {
            "version": 1,
            "created_at": checkpoint.created_at,
            "event_id": event_id,
            "event_hash": event_hash,
            "event_count": count,
        },
    )
    return checkpoint


def _checkpoint_chain_problem(
    ring: dict[str, ChainKey], checkpoints: list[AuditCheckpoint]
) -> ChainProblem | None:
    previous: dict[str, Any] | None = None
    for checkpoint in checkpoints:
        values = checkpoint_values(checkpoint)
        if not records.checkpoint_signed(ring, values):
            return ChainProblem(
                checkpoint.event_id or 0,
                f"checkpoint #{checkpoint.pk} is not signed by a listed key "
                "(forged, or its key was removed from AUDIT_CHAIN_KEY)",
            )
        link = records.checkpoint_link_problem(previous, values)
        if link:
            return ChainProblem(checkpoint.event_id or 0, link)
        previous = values
    return None


def _against_checkpoint(checked: int, checkpoint: AuditCheckpoint) -> ChainProblem | None:
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


def _export_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as export:
        yield from export


def compare_with_export(path: Path | str) -> ChainProblem | None:
    """The first difference between the database and an export (a checkpoint file or an
    audit stream file): the export must verify by itself, every checkpoint in it must be in
    the database unchanged and still see its event, and every event in it must be in the
    database unchanged, with no other event between them."""
    path = Path(path)
    try:
        check = records.verify_export(_export_lines(path), keyring())
    except OSError as exc:
        return ChainProblem(0, f"the export {path} cannot be read ({exc.strerror})")
    if not check.ok:
        return ChainProblem(0, f"the export {path} does not verify by itself: {check.problem}")
    checkpoints = {
        checkpoint.pk: checkpoint.mac for checkpoint in AuditCheckpoint.objects.only("id", "mac")
    }
    database_events: Iterator[AuditEvent] | None = None
    pending: AuditEvent | None = None
    for line in records.read_export(_export_lines(path)):
        record, where = line.record, f"{path.name} line {line.number}"
        if record["type"] == "checkpoint":
            mac = checkpoints.get(record["id"])
            if mac != record["mac"]:
                return ChainProblem(
                    record["event_id"] or 0,
                    f"checkpoint #{record['id']} ({where}) is "
                    + (
                        "missing from the database: checkpoints were deleted"
                        if mac is None
                        else "different in the database: checkpoints were rewritten"
                    ),
                )
            if record["event_id"] is not None:
                stored = (
                    AuditEvent.objects.filter(pk=record["event_id"])
                    .values_list("hash", flat=True)
                    .first()
                )
                if stored != record["event_hash"]:
                    return ChainProblem(
                        record["event_id"],
                        f"checkpoint #{record['id']} ({where}) saw this event, which is "
                        + ("gone from" if stored is None else "different in")
                        + " the database (deleted or rewritten)",
                    )
            continue
        if database_events is None:
            database_events = (
                AuditEvent.objects.filter(pk__gte=record["id"])
                .order_by("id")
                .iterator(chunk_size=2000)
            )
            pending = next(database_events, None)
        if pending is not None and pending.pk < record["id"]:
            return ChainProblem(
                pending.pk,
                f"it is in the database but not in the export before event #{record['id']} "
                f"({where}): inserted after it was shipped",
            )
        if pending is None or pending.pk > record["id"]:
            return ChainProblem(
                record["id"],
                f"it was shipped ({where}) but is missing from the database: deleted",
            )
        if records.event_record(event_values(pending)) != record:
            return ChainProblem(
                record["id"], f"it differs from what was shipped ({where}): edited after shipping"
            )
        pending = next(database_events, None)
    return None


def _record_checkpoint(result: Any, source: str) -> AuditCheckpoint | None:
    """Sign a chained checkpoint after the newest one; None when a concurrent verification
    already vouched for at least as much."""
    key = signing_key()
    with transaction.atomic():
        lock_chain()
        latest = AuditCheckpoint.objects.order_by("-id").first()
        if latest is not None and latest.event_count > result.checked:
            return None
        checkpoint = AuditCheckpoint(
            created_at=timezone.now(),
            version=records.CHAINED_CHECKPOINT,
            seq=(latest.seq or 0) + 1 if latest is not None else 1,
            prev_checkpoint_id=latest.pk if latest is not None else None,
            prev_mac=latest.mac if latest is not None else "",
            event_id=result.last_id,
            event_hash=result.last_hash,
            event_count=result.checked,
            source=source[:64],
            key_id=key.id,
        )
        checkpoint.mac = checkpoint_mac(key, checkpoint)
        checkpoint.save()
        transaction.on_commit(lambda: _write_checkpoint_file(checkpoint), robust=True)
    return checkpoint


def _write_checkpoint_file(checkpoint: AuditCheckpoint) -> None:
    path = settings.AUDIT_CHECKPOINT_FILE
    if not path:
        return
    try:
        records.append_lines(path, [records.checkpoint_record(checkpoint_values(checkpoint))])
    except OSError as exc:
        logger.error(
            "Audit checkpoint #%s could not be appended to AUDIT_CHECKPOINT_FILE %s: %s",
            checkpoint.pk,
            path,
            exc.strerror,
        )


def verify_chain(source: str = "", against: Path | str | None = None) -> Verification:
    """Verify the whole chain and the checkpoints, compare with `against` (by default
    AUDIT_CHECKPOINT_FILE when it exists); record a checkpoint if everything passes."""
    ring = keyring()
    checkpoints = list(AuditCheckpoint.objects.order_by("id"))
    # Legacy rows verify only up to the first checkpoint; with no checkpoint, not at all.
    legacy_until = (checkpoints[0].event_id or 0) if checkpoints else 0
    result = walk(AuditEvent.objects.order_by("id").iterator(chunk_size=5000), ring, legacy_until)
    previous = checkpoints[-1] if checkpoints else None
    problem = result.problem or _checkpoint_chain_problem(ring, checkpoints)
    if problem is None and previous is not None:
        problem = _against_checkpoint(result.checked, previous)
    if against is None and settings.AUDIT_CHECKPOINT_FILE:
        default = Path(settings.AUDIT_CHECKPOINT_FILE)
        against = default if default.exists() else None
    if problem is None and against is not None:
        problem = compare_with_export(against)
    recorded = None
    if problem is None:
        # A checkpoint vouches only for a log that verified: after a break the last good one
        # stays the reference, so the alarm keeps firing until someone investigates.
        recorded = _record_checkpoint(result, source)
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
            # The same JSON line as AUDIT_CHECKPOINT_FILE gets (--against reads either).
            "audit_checkpoint": (
                records.dumps(records.checkpoint_record(checkpoint_values(recorded)))
                if recorded
                else ""
            ),
        },
    )
    chain_verified.send(sender=AuditCheckpoint, result=verification)
    return verification
