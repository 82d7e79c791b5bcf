"""Rate limits for refused credentials, the one home of the portal's per-source counters.

Two budgets, each counted per source in fixed windows, one CredentialFailure row per (scope,
key, window):

- API: each refused bearer token is counted under the caller's address (as
  portal/access/addresses.py resolves it) and under the token's public prefix, in windows of
  API_AUTH_FAILURE_WINDOW_SECONDS. Past API_AUTH_FAILURE_LIMIT failures in a window the
  address is refused before its credential is even looked at (429 + Retry-After); failures
  for the prefix are answered 429 too, but the right token with that prefix still works, so
  nobody can lock a service client out by knowing its (non-secret) prefix.
- Sign-in: each failed password sign-in (whatever the username) and each refused "Sign in
  with Microsoft" callback is counted under the caller's address, in windows of
  LOGIN_COOLOFF_MINUTES. Past LOGIN_ADDRESS_FAILURE_LIMIT the address may not try again until
  the window ends, with any username and even the right password: password spraying (one
  password over many usernames) never reaches django-axes' per-username-and-address lockout.

The counter rows are the record: one counted event per source and window instead of one
hash-chained audit row per attempt, so an unauthenticated caller cannot grow the audit log.

Why the database and not Django's cache: the cache here is the default per-process LocMem
(Redis is optional in this deployment), so each gunicorn worker in each pod would count on
its own and allow the limit many times over; the database is shared by every process, a
single-row `UPDATE … SET count = count + 1` is atomic on PostgreSQL and SQLite, and the rows
double as the security record operators read (admin, metrics) and survive restarts.

    wait = wait_before_trying(request)       # > 0: answer 429 with Retry-After: wait
    ...check the credential...
    wait = record_failure(request, token_prefix=prefix, reason="unknown token")
"""

from __future__ import annotations

import ipaddress
import math
from datetime import datetime
from typing import TypedDict

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from portal.access.addresses import client_address, client_ip
from portal.access.models import CredentialFailure
from portal.lib.dbtext import without_nul

Scope = CredentialFailure.Scope
OTHER_PREFIX = "(not a portal token)"
KEEP_DAYS = 30  # the counters are evidence, not history (pruned by portal.jobs.retention)


def address_key(request: HttpRequest) -> str:
    """The address bucket: the address, or its /64 for IPv6 (one host has a whole /64)."""
    address = client_address(request)
    if address is None:
        return client_ip(request) or "(unknown)"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _window(now: datetime, size: int) -> tuple[datetime, int]:
    """(start of the current `size`-second window, seconds until it ends)."""
    epoch = now.timestamp()
    start = math.floor(epoch / size) * size
    return datetime.fromtimestamp(start, tz=now.tzinfo), max(1, math.ceil(start + size - epoch))


class _Attempt(TypedDict):
    """What _count records of one attempt besides where it is counted."""

    refused: bool
    reason: str
    path: str
    address: str


def _count(
    scope: str,
    key: str,
    window_start: datetime,
    now: datetime,
    *,
    refused: bool,
    reason: str,
    path: str,
    address: str,
) -> int:
    """Add one attempt to the row for (scope, key, window); returns the failures counted."""
    key = without_nul(key)
    fields = {
        "last_seen_at": now,
        "last_reason": reason[:100],
        "last_path": without_nul(path)[:255],
        "last_address": without_nul(address)[:45],
    }
    match = CredentialFailure.objects.filter(scope=scope, key=key[:64], window_start=window_start)
    increments = {"refused": F("refused") + 1} if refused else {"count": F("count") + 1}
    if not match.update(**increments, **fields):
        try:
            with transaction.atomic():
                CredentialFailure.objects.create(
                    scope=scope,
                    key=key[:64],
                    window_start=window_start,
                    first_seen_at=now,
                    count=0 if refused else 1,
                    refused=1 if refused else 0,
                    **fields,
                )
        except IntegrityError:  # another process created it meanwhile
            match.update(**increments, **fields)
    return match.values_list("count", flat=True).first() or 0


def _failures(scope: str, key: str, window_start: datetime) -> int:
    return (
        CredentialFailure.objects.filter(
            scope=scope, key=without_nul(key)[:64], window_start=window_start
        )
        .values_list("count", flat=True)
        .first()
        or 0
    )


def _wait(request: HttpRequest, scope: str, limit: int, window_seconds: int) -> int:
    """Seconds the caller's address must wait (0: go ahead); a refusal is counted on the
    address's row, so the burst's size stays visible."""
    now = timezone.now()
    start, remaining = _window(now, window_seconds)
    key = address_key(request)
    if _failures(scope, key, start) < limit:
        return 0
    _count(
        scope,
        key,
        start,
        now,
        refused=True,
        reason="rate limited",
        path=request.path,
        address=client_ip(request),
    )
    return remaining


def wait_before_trying(request: HttpRequest) -> int:
    """Seconds this caller's address must wait before presenting an API credential (0: go
    ahead)."""
    return _wait(
        request,
        Scope.ADDRESS,
        settings.API_AUTH_FAILURE_LIMIT,
        settings.API_AUTH_FAILURE_WINDOW_SECONDS,
    )


def _sign_in_window_seconds() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def wait_before_signing_in(request: HttpRequest) -> int:
    """Seconds this caller's address must wait before it may try to sign in again (0: go
    ahead): LOGIN_ADDRESS_FAILURE_LIMIT failed sign-ins in the current window."""
    return _wait(
        request, Scope.SIGN_IN, settings.LOGIN_ADDRESS_FAILURE_LIMIT, _sign_in_window_seconds()
    )


def record_sign_in_failure(request: HttpRequest, *, reason: str) -> None:
    """Count a failed password sign-in or a refused SSO callback under the caller's address."""
    now = timezone.now()
    start, _ = _window(now, _sign_in_window_seconds())
    _count(
        Scope.SIGN_IN,
        address_key(request),
        start,
        now,
        refused=False,
        reason=reason,
        path=request.path,
        address=client_ip(request),
    )


def record_failure(request: HttpRequest, *, token_prefix: str | None, reason: str) -> int:
    """Count a refused (or missing) credential under the address and the token's prefix.

    `token_prefix` is the credential's public part (an API token's `fgp_…` prefix, or
    OTHER_PREFIX for a credential that is not one of ours: nothing of it is stored), or None
    when no credential was presented. Returns the seconds to wait if this attempt went past a
    limit (answer 429), else 0 (answer 401).
    """
    now = timezone.now()
    start, remaining = _window(now, settings.API_AUTH_FAILURE_WINDOW_SECONDS)
    limit = settings.API_AUTH_FAILURE_LIMIT
    common: _Attempt = {
        "refused": False,
        "reason": reason,
        "path": request.path,
        "address": client_ip(request),
    }
    by_address = _count(Scope.ADDRESS, address_key(request), start, now, **common)
    by_prefix = (
        0
        if token_prefix is None
        else _count(Scope.TOKEN_PREFIX, token_prefix, start, now, **common)
    )
    return remaining if by_address > limit or by_prefix > limit else 0
