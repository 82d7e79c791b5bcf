"""Rate limits for refused credentials (bad bearer tokens), shared by every API entry point.

Each refused credential is counted under the caller's address (as portal/access/addresses.py
resolves it) and under the token's public prefix, in fixed windows of
API_AUTH_FAILURE_WINDOW_SECONDS. Past API_AUTH_FAILURE_LIMIT failures in a window:

- the address is refused before its credential is even looked at (429 + Retry-After);
- failures for the prefix are answered 429 too, but the right token with that prefix still
  works, so nobody can lock a service client out by knowing its (non-secret) prefix.

The counter rows (CredentialFailure) are the record: one counted event per source and window
instead of one hash-chained audit row per attempt.

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
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from portal.access.addresses import client_address, client_ip
from portal.access.models import CredentialFailure
from portal.dbtext import without_nul

Scope = CredentialFailure.Scope
OTHER_PREFIX = "(not a portal token)"
KEEP_DAYS = 30


def address_key(request: HttpRequest) -> str:
    """The address bucket: the address, or its /64 for IPv6 (one host has a whole /64)."""
    address = client_address(request)
    if address is None:
        return client_ip(request) or "(unknown)"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _window(now: datetime) -> tuple[datetime, int]:
    """(start of the current window, seconds until it ends)."""
    size = settings.API_AUTH_FAILURE_WINDOW_SECONDS
    epoch = now.timestamp()
    start = math.floor(epoch / size) * size
    return datetime.fromtimestamp(start, tz=now.tzinfo), max(1, math.ceil(start + size - epoch))


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


def wait_before_trying(request: HttpRequest) -> int:
    """Seconds this caller's address must wait before presenting a credential (0: go ahead).

    A refusal is counted on the address's row, so the burst's size stays visible.
    """
    now = timezone.now()
    start, remaining = _window(now)
    key = address_key(request)
    if _failures(Scope.ADDRESS, key, start) < settings.API_AUTH_FAILURE_LIMIT:
        return 0
    _count(
        Scope.ADDRESS,
        key,
        start,
        now,
        refused=True,
        reason="rate limited",
        path=request.path,
        address=client_ip(request),
    )
    return remaining


def record_failure(request: HttpRequest, *, token_prefix: str | None, reason: str) -> int:
    """Count a refused (or missing) credential under the address and the token's prefix.

    `token_prefix` is the credential's public part (an API token's `fgp_…` prefix, or
    OTHER_PREFIX for a credential that is not one of ours: nothing of it is stored), or None
    when no credential was presented. Returns the seconds to wait if this attempt went past a
    limit (answer 429), else 0 (answer 401).
    """
    now = timezone.now()
    start, remaining = _window(now)
    limit = settings.API_AUTH_FAILURE_LIMIT
    common = {
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


def prune_credential_failures(keep_days: int = KEEP_DAYS) -> int:
    """Forget windows older than `keep_days` (the counters are evidence, not history)."""
    cutoff = timezone.now() - timedelta(days=keep_days)
    deleted, _ = CredentialFailure.objects.filter(window_start__lt=cutoff).delete()
    return deleted
