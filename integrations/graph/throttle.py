"""Rate limits for Graph, in one place: who may send now, and who must wait.

- **Mailbox gates** (this process; "Microsoft Graph service-specific throttling limits", Outlook:
  per app ID and mailbox): at most
  GRAPH_MAX_IN_FLIGHT_PER_MAILBOX requests in flight, a token bucket of
  GRAPH_MAILBOX_BUDGET_PER_10_MIN per 600 s, and a "blocked until" window after a 429.
- **Shared windows** (every worker, a row's blocked_until): a Retry-After one process
  was given holds for all of them. Keys: `graph-mailbox:<Graph user id>` for a mailbox, and
  the messaging keys (`teams-chat:…`, `teams-channel:…`, `teams-sender:…`).
- **Send slots** (every worker, a row's next_slot_at): outbound mail and Teams posts are
  spaced one interval apart per key (the sender asks for a slot before each send).
- **Window budgets** (every worker, one slot row per reservation): at most N requests in any
  W seconds under a key, as Graph counts the subscriptions API; bursts up to N are allowed,
  which paced slots one interval apart would not (reserve_window_slot).
- **Mailbox leases** (every worker, one lease row per request in flight): the in-flight
  limit counted across all processes and nodes, since Graph counts it per app and mailbox,
  not per process; the gate's semaphore only keeps one process's threads from queueing on
  the store.

A mailbox is keyed by its Graph id: `/users/{upn}/…` and `/users/{id}/…` are the same
mailbox to Graph, so they share one gate, one budget and one window. UPNs are resolved
through the monitored users (cached per process); an unknown UPN stays its own key.

The rows live in the application's store (ports.SharedLimits); the policy lives here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from integrations.graph import ports
from integrations.graph.ports import StoreUnavailable

# The logger keeps the name log pipelines and alerts already filter on.
logger = logging.getLogger("integrations.microsoft.throttle")

BUDGET_WINDOW_SECONDS = 600.0
MAILBOX_PREFIX = "graph-mailbox:"
# How long a UPN → id answer is trusted (a renamed UPN is noticed within this), and how long
# "no monitored user has this UPN" is (so unknown senders cost one query a minute).
RESOLVED_TTL_SECONDS = 600.0
UNKNOWN_TTL_SECONDS = 60.0


# --------------------------------------------------------------------------- mailbox ids


_ids_lock = threading.Lock()
_ids: dict[str, tuple[str, float]] = {}  # lower-cased UPN → (Graph id or "", expires)


def mailbox_id(name: str | None) -> str:
    """The key of a mailbox: its Graph user id (lower-cased), resolved from a UPN when a
    monitored user has it; otherwise the name as given, lower-cased."""
    name = (name or "").strip().strip("'").lower()
    if "@" not in name:
        return name
    now = time.monotonic()
    with _ids_lock:
        cached = _ids.get(name)
    if cached is not None and cached[1] > now:
        return cached[0] or name
    try:
        found = ports.shared_limits().graph_id_of(name)
    except StoreUnavailable:  # a key is still needed; the UPN is one, just not shared with the id
        return name
    resolved = (found or "").lower()
    ttl = RESOLVED_TTL_SECONDS if resolved else UNKNOWN_TTL_SECONDS
    with _ids_lock:
        _ids[name] = (resolved, now + ttl)
    return resolved or name


def mailbox_key(name: str | None) -> str:
    """The shared-window / send-slot key of a mailbox (by UPN or id): one per mailbox."""
    return (MAILBOX_PREFIX + mailbox_id(name))[:300]


# --------------------------------------------------------------------------- gates


class Gate:
    """Concurrency, budget and throttle window for one mailbox, in this process."""

    def __init__(self, in_flight: int, budget: int) -> None:
        self.semaphore = threading.BoundedSemaphore(in_flight)
        self.capacity = float(budget)
        self.tokens = float(budget)
        self.rate = budget / BUDGET_WINDOW_SECONDS  # tokens per second
        self.updated = time.monotonic()
        self.blocked_until = 0.0  # time.monotonic() value
        self.lock = threading.Lock()

    def wait_needed(self) -> float:
        """Seconds until a request may be sent; takes a budget token when it returns 0."""
        with self.lock:
            now = time.monotonic()
            if now < self.blocked_until:
                return self.blocked_until - now
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) / self.rate

    def block_for(self, seconds: float) -> None:
        with self.lock:
            self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)

    def blocked_for(self) -> float:
        with self.lock:
            return max(0.0, self.blocked_until - time.monotonic())


_gates_lock = threading.Lock()
_gates: dict[str, Gate] = {}


def gate(mailbox: str) -> Gate:
    """The gate of a mailbox key (from mailbox_id)."""
    with _gates_lock:
        found = _gates.get(mailbox)
        if found is None:
            found = _gates[mailbox] = Gate(
                int(settings.GRAPH_MAX_IN_FLIGHT_PER_MAILBOX),
                int(settings.GRAPH_MAILBOX_BUDGET_PER_10_MIN),
            )
        return found


def mailbox_blocked_for(name: str) -> float:
    """Seconds left in a mailbox's window in this process (0 when it may send). Console."""
    with _gates_lock:
        found = _gates.get(mailbox_id(name))
    return found.blocked_for() if found is not None else 0.0


@dataclass(frozen=True)
class Turn:
    """What stands between a request and Graph: seconds to wait (0: go now) and why."""

    wait: float
    reason: str = ""  # "budget" | "window" | ""


def next_turn(mailbox: str, windows: Iterable[str] = ()) -> Turn:
    """Whether a request for `mailbox` (a key from mailbox_id, or "") under the extra shared
    `windows` may leave now. Takes a budget token when it may (wait 0)."""
    keys = list(windows)
    found = gate(mailbox) if mailbox else None
    if found is not None:
        keys.insert(0, mailbox_key(mailbox))
    shared = max([blocked_for(key) for key in keys] or [0.0])
    if found is not None and shared > 0:
        found.block_for(shared)  # adopt a window another process recorded
    if shared > 0:
        return Turn(shared, "window")
    if found is not None:
        wait = found.wait_needed()
        if wait > 0:
            return Turn(wait, "window" if found.blocked_for() > 0 else "budget")
    return Turn(0.0)


def throttled(mailbox: str, windows: Iterable[str], seconds: float) -> None:
    """Graph said 429 (or 503) with Retry-After `seconds`: block this process's gate and
    share the window with every worker."""
    if mailbox:
        gate(mailbox).block_for(seconds)
        share_block(mailbox_key(mailbox), seconds)
    for key in windows:
        share_block(key, seconds)


def reset_state() -> None:
    """Forget gates and resolved ids (tests; settings changes). Shared rows stay."""
    with _gates_lock:
        _gates.clear()
    with _ids_lock:
        _ids.clear()


# --------------------------------------------------------------------------- shared rows


def share_block(key: str, seconds: float) -> None:
    """Nobody sends under `key` before `seconds` have passed (windows only grow). Best
    effort: a database error leaves this process's own gate to honour the window."""
    until = timezone.now() + timedelta(seconds=seconds)
    try:
        ports.shared_limits().extend_block(key, until)
    except StoreUnavailable:
        logger.warning("Could not share the Retry-After window of %s", key, exc_info=True)


def blocked_for(key: str) -> float:
    """Seconds left in the shared window of `key` (0 when none)."""
    try:
        until = ports.shared_limits().blocked_until(key)
    except StoreUnavailable:
        return 0.0
    if until is None:
        return 0.0
    return max(0.0, (until - timezone.now()).total_seconds())


LEASE_POLL_SECONDS = (0.02, 0.25)  # first and longest pause between tries


def acquire_mailbox_lease(mailbox: str, *, wait_seconds: float, hold_seconds: float) -> int | None:
    """A slot of the mailbox's in-flight limit, shared by every worker: the lease's id, or
    None when no slot freed within `wait_seconds`. `hold_seconds` bounds the lease (the
    request's timeout), so a holder that died frees it. A database error gives 0: the
    request goes ahead under this process's own gate rather than not at all."""
    store = ports.shared_limits()
    if store.in_transaction():
        # A lease written inside the caller's transaction would be invisible to the others
        # until it commits; network I/O does not belong in a transaction anyway.
        return 0
    key = mailbox_key(mailbox)
    limit = int(settings.GRAPH_MAX_IN_FLIGHT_PER_MAILBOX)
    deadline = time.monotonic() + wait_seconds
    pause = LEASE_POLL_SECONDS[0]
    while True:
        now = timezone.now()
        try:
            lease = store.take_lease(
                key, limit=limit, now=now, expires_at=now + timedelta(seconds=hold_seconds)
            )
        except StoreUnavailable:
            logger.warning("Could not take a shared in-flight slot for %s", key, exc_info=True)
            return 0
        if lease is not None:
            return lease
        if time.monotonic() + pause > deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, LEASE_POLL_SECONDS[1])


def release_mailbox_lease(lease_id: int) -> None:
    if not lease_id:
        return
    try:
        ports.shared_limits().release_lease(lease_id)
    except StoreUnavailable:  # it lapses by itself at its expiry
        logger.warning("Could not release in-flight slot %s", lease_id, exc_info=True)


def reserve_slot(keys: list[tuple[str, float]], *, not_before: datetime | None = None) -> datetime:
    """Reserve the earliest time at which one send may leave under every (key, interval)
    budget, and return it. Slots are one interval apart per key; shared windows
    (`blocked_until`) are respected. The rows are locked only for this call; a store error
    propagates (no slot was reserved)."""
    now = timezone.now()
    return ports.shared_limits().reserve_slot(sorted(keys), now=now, not_before=not_before or now)


# Slots are spaced a little wider than the limit: the time between taking a slot and the
# request reaching Graph varies by some milliseconds, and Graph counts arrivals.
SLOT_MARGIN = 0.05  # fraction of the interval, plus 50 ms


def slot_interval(per_second: float) -> float:
    interval = 1.0 / per_second
    return interval * (1 + SLOT_MARGIN) + 0.05


def wait_for_slot(key: str, per_second: float) -> None:
    """Wait for this process's turn under the shared budget `key` (every worker takes its
    slots from the same row), then return: for a short paced loop such as paging a list."""
    slot = reserve_slot([(key, slot_interval(per_second))])
    wait = (slot - timezone.now()).total_seconds()
    if wait > 0:
        time.sleep(wait)


# A reserved slot is this much later than the window strictly needs: a request may reach Graph
# some milliseconds after its slot, and Graph counts arrivals.
WINDOW_MARGIN_SECONDS = 0.25


def reserve_window_slot(key: str, limit: int, window_seconds: float) -> datetime:
    """Reserve the earliest time one request may leave under `key` so that no `window_seconds`
    hold more than `limit` of them (and outside its shared Retry-After window), and return it.
    The k-th reservation is at least a window after the (k-limit)-th: a burst of `limit` goes
    at once, then one as each leaves the window. A store error propagates (nothing was
    reserved)."""
    now = timezone.now()
    window = timedelta(seconds=window_seconds + WINDOW_MARGIN_SECONDS)
    return ports.shared_limits().reserve_window_slot(key, limit=limit, window=window, now=now)


def wait_for_window_slot(key: str, limit: int, window_seconds: float) -> float:
    """Reserve a slot under the window budget `key` and sleep until it; returns the wait."""
    slot = reserve_window_slot(key, limit, window_seconds)
    wait = (slot - timezone.now()).total_seconds()
    if wait > 0:
        time.sleep(wait)
    return max(0.0, wait)
