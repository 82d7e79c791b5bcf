"""The audit chain's formulas and its JSON-lines export format, in the standard library only.

Everything that computes or checks a hash lives here, so the offline verifier
(`python -m portal.audit.verify_export`) runs on a machine that has this file and the chain
key but neither Django nor the database. portal/audit/chain.py and verification.py use the
same functions for the database.

An export is one JSON object a line, in chain order:

- an event: {"type": "event", "id", every field of HASHED_FIELDS ("created_at" as ISO 8601
  with microseconds), "prev_hash", "hash", "key_id"};
- a checkpoint: {"type": "checkpoint", "id", "created_at", "version", "seq",
  "prev_checkpoint_id", "prev_mac", "event_id", "event_hash", "event_count", "source",
  "key_id", "mac"}.

Checkpoints form a chain of their own: each (version 2) signs its number in the sequence and
the MAC of the checkpoint before it, so a checkpoint taken out of the middle breaks the next
one. Version 1 checkpoints (written before the checkpoint chain) sign no predecessor.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GENESIS_HASH = "0" * 64
LEGACY_KEY_ID = "sha256-legacy"
MIN_KEY_CHARS = 32
MAX_KEY_ID_CHARS = 32
CHAINED_CHECKPOINT = 2  # the checkpoint version that signs its predecessor

# The fields that the hash covers, in a fixed order. `id` is left out on purpose: the chain
# (prev_hash) already fixes each row's place.
HASHED_FIELDS = (
    "created_at",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_role",
    "action",
    "target_type",
    "target_id",
    "params",
    "outcome",
    "reason",
    "ip",
    "user_agent",
    "request_id",
)
EVENT_FIELDS = ("id", *HASHED_FIELDS, "prev_hash", "hash", "key_id")
CHECKPOINT_FIELDS = (
    "id",
    "created_at",
    "version",
    "seq",
    "prev_checkpoint_id",
    "prev_mac",
    "event_id",
    "event_hash",
    "event_count",
    "source",
    "key_id",
    "mac",
)


class KeyListError(ValueError):
    """AUDIT_CHAIN_KEY cannot be parsed; the message names the entry, never the secret."""


@dataclass(frozen=True)
class ChainKey:
    id: str
    secret: bytes | None  # None: the legacy unkeyed SHA-256

    def digest(self, message: str) -> str:
        if self.secret is None:
            return hashlib.sha256(message.encode("utf-8")).hexdigest()
        return hmac.new(self.secret, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # never the secret
        return f"ChainKey({self.id!r})"


LEGACY_KEY = ChainKey(LEGACY_KEY_ID, None)


def parse_keys(value: str) -> list[ChainKey]:
    """`id:secret,id:secret` (newest first); a bare secret gets an id derived from it."""
    keys: list[ChainKey] = []
    for position, entry in enumerate(item.strip() for item in value.split(",")):
        if not entry:
            continue
        key_id, sep, secret = entry.partition(":")
        if not sep:
            key_id, secret = "k" + hashlib.sha256(entry.encode()).hexdigest()[:8], entry
        key_id = key_id.strip()
        if (
            not key_id
            or len(key_id) > MAX_KEY_ID_CHARS
            or key_id == LEGACY_KEY_ID
            or not all(char.isalnum() or char in "-_." for char in key_id)
        ):
            raise KeyListError(
                f"AUDIT_CHAIN_KEY entry {position + 1}: the key id must be 1-{MAX_KEY_ID_CHARS} "
                f"letters, digits, '-', '_' or '.' (and not {LEGACY_KEY_ID!r})."
            )
        if len(secret) < MIN_KEY_CHARS:
            raise KeyListError(
                f"AUDIT_CHAIN_KEY entry {position + 1} ({key_id}): the key must be at least "
                f"{MIN_KEY_CHARS} characters (manage.py generate_audit_chain_key makes one)."
            )
        if any(key.id == key_id for key in keys):
            raise KeyListError(f"AUDIT_CHAIN_KEY names key id {key_id!r} twice.")
        keys.append(ChainKey(key_id, secret.encode("utf-8")))
    return keys


def ring_of(keys: Iterable[ChainKey]) -> dict[str, ChainKey]:
    ring = {key.id: key for key in keys}
    ring[LEGACY_KEY_ID] = LEGACY_KEY
    return ring


def timestamp(value: datetime | str) -> str:
    """The one text form of a time in hashes and exports."""
    return value if isinstance(value, str) else value.isoformat(timespec="microseconds")


def canonical(values: dict[str, Any]) -> str:
    row = {name: values[name] for name in HASHED_FIELDS}
    row["created_at"] = timestamp(values["created_at"])
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compute_hash(prev_hash: str, values: dict[str, Any], key: ChainKey) -> str:
    if key.secret is None:  # exactly the pre-keyed formula, so legacy rows still verify
        return key.digest(prev_hash + canonical(values))
    return key.digest(f"{key.id}\n{prev_hash}{canonical(values)}")


def checkpoint_mac(key: ChainKey, checkpoint: dict[str, Any]) -> str:
    """The MAC of a checkpoint (a record or a model's field values)."""
    created = timestamp(checkpoint["created_at"])
    event_id = checkpoint["event_id"] or ""
    body = f"{event_id}\n{checkpoint['event_hash']}\n{checkpoint['event_count']}\n{created}"
    if checkpoint["version"] < CHAINED_CHECKPOINT:
        return key.digest(f"checkpoint\n{body}")
    return key.digest(
        f"checkpoint/2\n{checkpoint['seq']}\n{checkpoint['prev_checkpoint_id'] or ''}\n"
        f"{checkpoint['prev_mac']}\n{body}"
    )


def checkpoint_signed(ring: dict[str, ChainKey], checkpoint: dict[str, Any]) -> bool:
    key = ring.get(checkpoint["key_id"])
    return (
        key is not None
        and key.secret is not None
        and hmac.compare_digest(checkpoint_mac(key, checkpoint), checkpoint["mac"])
    )


def checkpoint_link_problem(previous: dict[str, Any] | None, checkpoint: dict[str, Any]) -> str:
    """Why `checkpoint` does not follow `previous` in the checkpoint chain ("" when it does).

    `previous` None: `checkpoint` is the first one there is.
    """
    name = f"checkpoint #{checkpoint['id']}"
    if checkpoint["version"] < CHAINED_CHECKPOINT:
        if previous is not None and previous["version"] >= CHAINED_CHECKPOINT:
            return f"{name} is unchained but follows chained ones (inserted)"
        return ""
    if previous is None:
        if checkpoint["prev_mac"] or checkpoint["seq"] != 1:
            return (
                f"{name} is number {checkpoint['seq']} of the checkpoint chain but none "
                "comes before it: checkpoints were deleted"
            )
        return ""
    expected_seq = (previous["seq"] or 0) + 1
    if checkpoint["prev_mac"] != previous["mac"] or checkpoint["seq"] != expected_seq:
        return (
            f"{name} does not follow checkpoint #{previous['id']} "
            f"(it signs #{checkpoint['prev_checkpoint_id']}, number {checkpoint['seq']}): "
            "checkpoints were deleted or inserted"
        )
    if (checkpoint["event_id"] or 0) < (previous["event_id"] or 0) or checkpoint[
        "event_count"
    ] < previous["event_count"]:
        return f"{name} saw fewer events than checkpoint #{previous['id']} before it"
    return ""


def event_record(values: dict[str, Any]) -> dict[str, Any]:
    record = {"type": "event", **{name: values[name] for name in EVENT_FIELDS}}
    record["created_at"] = timestamp(values["created_at"])
    return record


def checkpoint_record(values: dict[str, Any]) -> dict[str, Any]:
    record = {"type": "checkpoint", **{name: values[name] for name in CHECKPOINT_FIELDS}}
    record["created_at"] = timestamp(values["created_at"])
    return record


def dumps(record: dict[str, Any]) -> str:
    """One line of an export (no newline)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def append_lines(path: str | os.PathLike[str], lines: Iterable[dict[str, Any]]) -> None:
    """Append records to a JSON-lines file and make them durable before returning.

    Opened for appending only (O_APPEND): nothing already there is rewritten. A line is
    written whole with one write() so a reader never sees half a record from us.
    """
    payload = "".join(dumps(record) + "\n" for record in lines).encode("utf-8")
    if not payload:
        return
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(descriptor, payload)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class Line:
    number: int
    record: dict[str, Any]


class ExportError(ValueError):
    """The export is not readable as audit records; the message names the line."""


def read_export(lines: Iterable[str]) -> Iterator[Line]:
    """The records of an export, with their line numbers (blank lines skipped)."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ExportError(f"line {number} is not JSON ({exc.msg}).") from None
        kind = record.get("type") if isinstance(record, dict) else None
        fields = {"event": EVENT_FIELDS, "checkpoint": CHECKPOINT_FIELDS}.get(str(kind))
        if fields is None:
            raise ExportError(f"line {number} is neither an audit event nor a checkpoint.")
        missing = [name for name in fields if name not in record]
        if missing:
            raise ExportError(f"line {number} lacks {', '.join(missing)}.")
        yield Line(number, record)


@dataclass(frozen=True)
class ExportCheck:
    events: int
    checkpoints: int
    duplicates: int
    problem: str  # "" when the export verified

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def message(self) -> str:
        counted = f"{self.events} events and {self.checkpoints} checkpoints" + (
            f" ({self.duplicates} repeated records skipped)" if self.duplicates else ""
        )
        if self.problem:
            return f"Export BROKEN: {self.problem} (after {counted})."
        return f"Export intact: {counted} verified."


def verify_export(lines: Iterable[str], ring: dict[str, ChainKey]) -> ExportCheck:  # noqa: C901 (the standalone verifier stays one function to audit)
    """Check an export end to end: every event's hash, the chain between events, every
    checkpoint's MAC and the chain between checkpoints, and each checkpoint against the event
    it saw. Records shipped twice (delivery is at least once) are skipped when identical.

    An export may begin part-way through the chain (a sink configured later): its first event
    and first checkpoint are then taken as they are, everything after them must follow.
    """
    events = checkpoints = duplicates = 0
    last_event: dict[str, Any] | None = None
    last_checkpoint: dict[str, Any] | None = None
    seen_hashes: dict[int, str] = {}
    seen_checkpoints: dict[int, str] = {}
    keyed = False
    newest_legacy: int | None = None
    legacy_until: int | None = None

    def broken(number: int, problem: str) -> ExportCheck:
        return ExportCheck(events, checkpoints, duplicates, f"line {number}: {problem}")

    try:
        for line in read_export(lines):
            record, number = line.record, line.number
            if record["type"] == "event":
                if seen_hashes.get(record["id"]) == record["hash"]:
                    duplicates += 1
                    continue
                if last_event is not None and record["id"] <= last_event["id"]:
                    return broken(number, f"event #{record['id']} is out of order or altered")
                if last_event is not None and record["prev_hash"] != last_event["hash"]:
                    return broken(
                        number,
                        f"event #{record['id']} does not follow event #{last_event['id']} "
                        "(an event was removed, inserted or reordered)",
                    )
                key = ring.get(record["key_id"])
                if key is None:
                    return broken(
                        number,
                        f"event #{record['id']} is signed with key {record['key_id']!r}, which "
                        "the key list does not hold",
                    )
                if key.secret is None:
                    if keyed or (legacy_until is not None and record["id"] > legacy_until):
                        return broken(
                            number,
                            f"event #{record['id']} claims the legacy unkeyed hash after the "
                            "chain was keyed (rewritten or inserted)",
                        )
                    newest_legacy = record["id"]
                keyed = keyed or key.secret is not None
                if not hmac.compare_digest(
                    compute_hash(record["prev_hash"], record, key), record["hash"]
                ):
                    return broken(
                        number, f"event #{record['id']}'s content does not match its hash (edited)"
                    )
                seen_hashes[record["id"]] = record["hash"]
                last_event = record
                events += 1
                continue
            if seen_checkpoints.get(record["id"]) == record["mac"]:
                duplicates += 1
                continue
            if not checkpoint_signed(ring, record):
                return broken(
                    number, f"checkpoint #{record['id']} is not signed by a listed key (forged)"
                )
            if last_checkpoint is not None:
                problem = checkpoint_link_problem(last_checkpoint, record)
                if problem:
                    return broken(number, problem)
            if legacy_until is None:
                legacy_until = record["event_id"] or 0
                if newest_legacy is not None and newest_legacy > legacy_until:
                    return broken(
                        number,
                        f"legacy event #{newest_legacy} lies past the first checkpoint's "
                        f"boundary #{legacy_until} (rewritten)",
                    )
            seen = seen_hashes.get(record["event_id"] or 0)
            if seen is not None and seen != record["event_hash"]:
                return broken(
                    number,
                    f"checkpoint #{record['id']} saw another hash at event #{record['event_id']}",
                )
            seen_checkpoints[record["id"]] = record["mac"]
            last_checkpoint = record
            checkpoints += 1
    except ExportError as exc:
        return ExportCheck(events, checkpoints, duplicates, str(exc).rstrip("."))
    if newest_legacy is not None and legacy_until is None:
        return ExportCheck(
            events,
            checkpoints,
            duplicates,
            "legacy (unkeyed) events and no signed checkpoint that pins them",
        )
    return ExportCheck(events, checkpoints, duplicates, "")
