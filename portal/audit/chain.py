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
is refused; rewriting the whole legacy chain no longer matches the pinned checkpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

GENESIS_HASH = "0" * 64
LEGACY_KEY_ID = "sha256-legacy"
MIN_KEY_CHARS = 32
MAX_KEY_ID_CHARS = 32

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
    """`id:secret,id:secret` (newest first); a bare secret gets an id derived from it.

    Raises ImproperlyConfigured naming the problem, never the secret.
    """
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
            raise ImproperlyConfigured(
                f"AUDIT_CHAIN_KEY entry {position + 1}: the key id must be 1-{MAX_KEY_ID_CHARS} "
                f"letters, digits, '-', '_' or '.' (and not {LEGACY_KEY_ID!r})."
            )
        if len(secret) < MIN_KEY_CHARS:
            raise ImproperlyConfigured(
                f"AUDIT_CHAIN_KEY entry {position + 1} ({key_id}): the key must be at least "
                f"{MIN_KEY_CHARS} characters (manage.py generate_audit_chain_key makes one)."
            )
        if any(key.id == key_id for key in keys):
            raise ImproperlyConfigured(f"AUDIT_CHAIN_KEY names key id {key_id!r} twice.")
        keys.append(ChainKey(key_id, secret.encode("utf-8")))
    return keys


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
    ring = {key.id: key for key in configured_keys()}
    ring[LEGACY_KEY_ID] = LEGACY_KEY
    return ring


def canonical(values: dict[str, Any]) -> str:
    row = {name: values[name] for name in HASHED_FIELDS}
    row["created_at"] = values["created_at"].isoformat(timespec="microseconds")
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compute_hash(prev_hash: str, values: dict[str, Any], key: ChainKey) -> str:
    if key.secret is None:  # exactly the pre-keyed formula, so legacy rows still verify
        return key.digest(prev_hash + canonical(values))
    return key.digest(f"{key.id}\n{prev_hash}{canonical(values)}")


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
    the legacy chain there); None: no limit yet.
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
                    "it claims the legacy unkeyed hash after the chain was keyed "
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
