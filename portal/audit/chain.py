"""The hash chain: hash = HMAC-SHA256(key, key_id || prev_hash || canonical row).

The key (AUDIT_CHAIN_KEY) is not in the database, so someone who can write the table cannot
recompute a valid chain after editing, inserting or deleting rows. Each row names the key
that signed it (`key_id`), so keys can be rotated: the newest key signs, older ones listed
after it still verify.

Rows written before the chain was keyed carry key id `sha256-legacy` and keep their unkeyed
SHA-256 hash. They verify only as the chain's beginning: before its first keyed row and not
past the first checkpoint (the keying migration pins the legacy chain with a signed one when
AUDIT_CHAIN_KEY is set). Every keyed row covers its predecessor's hash, so editing a legacy
row breaks the first keyed row; rewriting keyed rows as legacy ones, or appending legacy rows,
is refused; rewriting the whole legacy chain no longer matches the pinned checkpoint; and a
database that holds legacy rows but no signed checkpoint fails verification (closed).

The formulas themselves are in portal/audit/records.py (standard library only, for the
offline verifier).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from portal.audit import records
from portal.audit.records import (  # noqa: F401  (the chain's formulas, re-exported)
    GENESIS_HASH,
    HASHED_FIELDS,
    LEGACY_KEY,
    LEGACY_KEY_ID,
    ChainKey,
    canonical,
    compute_hash,
)


def parse_keys(value: str) -> list[ChainKey]:
    """`id:secret,id:secret` (newest first); a bare secret gets an id derived from it.

    Raises ImproperlyConfigured naming the problem, never the secret.
    """
    try:
        return records.parse_keys(value)
    except records.KeyListError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def configured_keys() -> list[ChainKey]:
    """The keys from settings (read at call time), newest first."""
    return parse_keys(settings.AUDIT_CHAIN_KEY)


def signing_key() -> ChainKey:
    keys = configured_keys()
    if not keys:
        raise ImproperlyConfigured(
            "AUDIT_CHAIN_KEY (or AUDIT_CHAIN_KEY_FILE) must be set: the audit log cannot be "
            "written without it."
        )
    return keys[0]


def keyring() -> dict[str, ChainKey]:
    return records.ring_of(configured_keys())


@dataclass(frozen=True)
class ChainProblem:
    event_id: int
    problem: str


@dataclass(frozen=True)
class ChainWalk:
    checked: int
    problem: ChainProblem | None
    last_id: int | None
    last_hash: str


def walk(
    events: Iterable[Any], ring: dict[str, ChainKey] | None = None, legacy_until: int | None = None
) -> ChainWalk:
    """Walk events in id order; how many were checked, the first problem, the newest row.

    `legacy_until`: the newest event id legacy rows may have (the first checkpoint pinned
    the legacy chain there; 0: there is no checkpoint, so no legacy row is accepted); None: no
    limit (only the keying migration, which pins the legacy chain, walks without one).
    """
    ring = keyring() if ring is None else ring
    expected_prev = GENESIS_HASH
    checked, last_id, keyed = 0, None, False
    for event in events:
        checked += 1
        if event.prev_hash != expected_prev:
            return ChainWalk(
                checked,
                ChainProblem(
                    event.id,
                    "its previous hash does not match the event before it "
                    "(an event was removed, inserted or reordered)",
                ),
                last_id,
                expected_prev,
            )
        key = ring.get(event.key_id)
        if key is None:
            return ChainWalk(
                checked,
                ChainProblem(
                    event.id,
                    f"it is signed with key {event.key_id!r}, which AUDIT_CHAIN_KEY "
                    "does not list (keep retired keys after the current one)",
                ),
                last_id,
                expected_prev,
            )
        if key.secret is None and (keyed or (legacy_until is not None and event.id > legacy_until)):
            return ChainWalk(
                checked,
                ChainProblem(
                    event.id,
                    "it claims the legacy unkeyed hash but no signed checkpoint pins the "
                    "legacy chain (rows rewritten as legacy, or the checkpoints deleted)"
                    if legacy_until == 0 and not keyed
                    else "it claims the legacy unkeyed hash after the chain was keyed "
                    "(rewritten or inserted)",
                ),
                last_id,
                expected_prev,
            )
        keyed = keyed or key.secret is not None
        values = {name: getattr(event, name) for name in HASHED_FIELDS}
        if not hmac.compare_digest(compute_hash(event.prev_hash, values, key), event.hash):
            return ChainWalk(
                checked,
                ChainProblem(event.id, "its content does not match its hash (edited)"),
                last_id,
                expected_prev,
            )
        expected_prev, last_id = event.hash, event.id
    return ChainWalk(checked, None, last_id, expected_prev)


def find_first_break(events: Iterable[Any]) -> tuple[int, ChainProblem | None]:
    """Walk events in id order; return how many were checked and the first problem, if any."""
    result = walk(events)
    return result.checked, result.problem
