"""What the Graph client needs from the application that runs it, and how it is plugged in.

This package imports nothing from the portal or from the integration built on it. What it
needs from outside is declared here and registered once at start-up (the integration does it
in its AppConfig.ready):

- a **credential store**: the active credential, as MSAL takes it (a secret, a certificate
  or a client-assertion callable: `auth.secret_credential`, `auth.certificate_credential`,
  `auth.client_assertion_credential` build them);
- a **call log**: one record per HTTP exchange with Graph;
- the **shared limits**: the throttle windows, send slots, in-flight leases and mailbox ids
  that every worker process shares (throttle.py keeps the policy, the store the rows);
- the **delegated token source**: the access token of the account that posts Teams messages.

Two notices go out: every app-token outcome (`observe_tokens`, for token health) and every
invalidation of the cached credential (`on_invalidate`, for caches built on it elsewhere).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from integrations.graph.errors import TokenError

logger = logging.getLogger("integrations.microsoft.auth")

# What MSAL's ConfidentialClientApplication takes as client_credential.
ClientCredential = str | dict[str, Any]


class StoreUnavailable(Exception):
    """A store could not answer (its database is down): the client goes on without it where
    it can (its own gate instead of a shared window, a log line instead of a call row)."""


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class StoredCredential:
    """The active credential, as the credential store hands it to token acquisition."""

    credential_id: int
    fingerprint: str  # identifies the value without revealing it (one MSAL app per value)
    kind: str
    client_credential: ClientCredential
    tenant_id: str = ""  # the app registration it was recorded for ("" = not recorded)
    client_id: str = ""


class CredentialStore(Protocol):
    def active(self) -> StoredCredential:
        """The active credential. Raises TokenError when there is none."""
        ...


# --------------------------------------------------------------------------- call log


@dataclass(frozen=True)
class GraphCallRecord:
    """One HTTP exchange with Graph (or one inner answer of a `$batch`)."""

    method: str
    route: str  # the low-cardinality route template, never ids
    status: int | None  # None: no answer (timeout, reset)
    duration_ms: int = 0  # 0 for inner `$batch` answers (Graph does not time them apart)
    throttled: bool = False
    retry_after: float | None = None
    request_id: str = ""
    error_code: str = ""
    mailbox: str = ""
    in_batch: bool = False


class CallLog(Protocol):
    def record(self, calls: Sequence[GraphCallRecord]) -> None:
        """Keep the calls (one write). Raises StoreUnavailable when they cannot be kept."""
        ...


# --------------------------------------------------------------------------- shared limits


class SharedLimits(Protocol):
    """The rows behind throttle.py's shared windows, send slots and in-flight leases.
    Every method raises StoreUnavailable when the store cannot answer, except reserve_slot,
    whose caller must know that no slot was reserved."""

    def graph_id_of(self, upn: str) -> str:
        """The Graph user id of a monitored mailbox with this UPN, "" when none has it."""
        ...

    def extend_block(self, key: str, until: datetime) -> None:
        """Nobody sends under `key` before `until` (a window only grows)."""
        ...

    def blocked_until(self, key: str) -> datetime | None:
        """The end of the shared window of `key` (None: never blocked)."""
        ...

    def in_transaction(self) -> bool:
        """Whether the caller is inside a transaction (a lease taken there is invisible to
        the other workers until it commits)."""
        ...

    def take_lease(
        self, key: str, *, limit: int, now: datetime, expires_at: datetime
    ) -> int | None:
        """A lease id when fewer than `limit` unexpired leases hold `key`, else None."""
        ...

    def release_lease(self, lease_id: int) -> None: ...

    def reserve_slot(
        self, keys: Sequence[tuple[str, float]], *, now: datetime, not_before: datetime
    ) -> datetime:
        """The earliest time at or after `not_before` that every key's next slot and shared
        window allow; each key's next slot moves one interval past it (one transaction)."""
        ...

    def reserve_window_slot(
        self, key: str, *, limit: int, window: timedelta, now: datetime
    ) -> datetime:
        """The earliest time at or after `now`, outside the key's shared window, such that no
        `window` holds more than `limit` reservations under `key`; reserved (one transaction).
        """
        ...


# --------------------------------------------------------------------------- delegated tokens


class DelegatedTokenSource(Protocol):
    def __call__(self, *, force_refresh: bool = False) -> str:
        """An access token of the delegated (Teams sender) account. Raises TokenError."""
        ...


# --------------------------------------------------------------------------- registration


@dataclass
class _Registered:
    credential_store: CredentialStore | None = None
    call_log: CallLog | None = None
    shared_limits: SharedLimits | None = None
    delegated_token: DelegatedTokenSource | None = None


_registered = _Registered()


def register(
    *,
    credential_store: CredentialStore,
    call_log: CallLog,
    shared_limits: SharedLimits,
    delegated_token: DelegatedTokenSource,
) -> None:
    """Plug the application's implementations in (once, at start-up; again replaces them)."""
    _registered.credential_store = credential_store
    _registered.call_log = call_log
    _registered.shared_limits = shared_limits
    _registered.delegated_token = delegated_token


def _missing(what: str) -> RuntimeError:
    return RuntimeError(
        f"The Graph client has no {what}: register one at start-up (integrations.graph.ports."
        "register)."
    )


def credential_store() -> CredentialStore:
    if _registered.credential_store is None:
        raise _missing("credential store")
    return _registered.credential_store


def call_log() -> CallLog:
    if _registered.call_log is None:
        raise _missing("call log")
    return _registered.call_log


def shared_limits() -> SharedLimits:
    if _registered.shared_limits is None:
        raise _missing("shared limits")
    return _registered.shared_limits


def delegated_token(*, force_refresh: bool = False) -> str:
    if _registered.delegated_token is None:
        raise _missing("delegated token source")
    return _registered.delegated_token(force_refresh=force_refresh)


# --------------------------------------------------------------------------- token outcomes


@dataclass(frozen=True)
class TokenOutcome:
    """One app-token request for the active credential: refused (`error`) or answered by the
    identity platform (`from_cache` False) or by MSAL's cache (which proves nothing new)."""

    credential_id: int
    error: TokenError | None = None
    from_cache: bool = False


_token_observers: list[Callable[[TokenOutcome], None]] = []


def observe_tokens(callback: Callable[[TokenOutcome], None]) -> None:
    """Call `callback` with every app-token outcome of this process (once per callback)."""
    if callback not in _token_observers:
        _token_observers.append(callback)


def report_token_outcome(outcome: TokenOutcome) -> None:
    for callback in list(_token_observers):
        try:
            callback(outcome)
        except Exception:  # recording health must never break a token request
            logger.exception("A token observer failed")


# --------------------------------------------------------------------------- invalidation


# Caches built on the active credential elsewhere (the Teams sender's MSAL apps) register
# here, so auth.invalidate() reaches them without this package importing theirs.
_on_invalidate: list[Callable[[], None]] = []


def on_invalidate(callback: Callable[[], None]) -> None:
    """Call `callback` whenever auth.invalidate() runs (once per callback)."""
    if callback not in _on_invalidate:
        _on_invalidate.append(callback)


def notify_invalidated() -> None:
    for callback in list(_on_invalidate):
        callback()
