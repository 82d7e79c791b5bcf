"""The hash chain: hash = SHA-256(prev_hash || canonical row)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS_HASH = "0" * 64

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


def canonical(values: dict[str, Any]) -> str:
    row = {name: values[name] for name in HASHED_FIELDS}
    row["created_at"] = values["created_at"].isoformat(timespec="microseconds")
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compute_hash(prev_hash: str, values: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical(values)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainProblem:
    event_id: int
    problem: str


def find_first_break(events: Iterable[Any]) -> tuple[int, ChainProblem | None]:
    """Walk events in id order; return how many were checked and the first problem, if any."""
    expected_prev = GENESIS_HASH
    checked = 0
    for event in events:
        checked += 1
        if event.prev_hash != expected_prev:
            return checked, ChainProblem(
                event.id, "its previous hash does not match the event before it "
                "(an event was removed, inserted or reordered)"
            )
        values = {name: getattr(event, name) for name in HASHED_FIELDS}
        if compute_hash(event.prev_hash, values) != event.hash:
            return checked, ChainProblem(event.id, "its content does not match its hash (edited)")
        expected_prev = event.hash
    return checked, None
