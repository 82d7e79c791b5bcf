"""What to do after one exchange with Graph, and how long to wait before the next.

The policy of the one retry loop (request.py) and of `$batch`'s inner retries (batch.py):
`classify` an outcome, `next_delay` before a retry (Graph's Retry-After wins, else exponential
backoff with full jitter), and the throttle window a failure opens (`window_of`).
"""

from __future__ import annotations

import enum
import random

from django.conf import settings

from integrations.graph.errors import GraphError, Throttled
from integrations.graph.exchange import GraphResponse

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def backoff_delay(attempt: int) -> float:
    """Full-jitter exponential backoff: uniform(0, base * 2**attempt), capped."""
    base = float(settings.GRAPH_BACKOFF_BASE_SECONDS)
    cap = float(settings.GRAPH_BACKOFF_MAX_SECONDS)
    return random.uniform(0.0, min(cap, base * (2**attempt)))


class Verdict(enum.Enum):
    DONE = "done"
    REFRESH_TOKEN = "refresh token"  # 401 with a cached token: get a new one, once
    RETRY = "retry"  # transient, and sending it again is harmless
    FAIL = "fail"  # permanent, or Graph may have acted on a request that must not repeat


def classify(
    result: GraphResponse | GraphError, *, repeatable: bool, token_refreshed: bool
) -> Verdict:
    """What to do after one exchange. `repeatable`: Graph acting on the request twice is
    harmless (idempotent methods, or the caller says so); otherwise a transient failure after
    which Graph may have acted (a 429 may have been acted on, 5xx, a read timeout) is not
    retried here: the caller's recovery path checks what happened first."""
    if isinstance(result, GraphResponse):
        return Verdict.DONE
    if (
        result.status == 401
        and not token_refreshed
        and result.code in ("InvalidAuthenticationToken", "")
    ):
        return Verdict.REFRESH_TOKEN
    if not result.transient:
        return Verdict.FAIL
    if result.may_have_acted and not repeatable:
        return Verdict.FAIL
    return Verdict.RETRY


def next_delay(error: GraphError, attempt: int, retries_left: int) -> float | None:
    """Seconds before retry number `attempt` (0-based) of a RETRY verdict, or None when no
    retry is left. Graph's Retry-After wins; else exponential backoff with full jitter."""
    if retries_left <= 0:
        return None
    if error.retry_after is not None:
        return error.retry_after
    return backoff_delay(attempt)


# Our own refusals: nothing reached Graph, so they open no window.
_LOCAL_CODES = frozenset({"LocalThrottle", "LocalConcurrency"})


def window_of(error: GraphError) -> float | None:
    """The throttle window a failure opens: every 429 (1 s without Retry-After), and any
    other transient answer that carries Retry-After (503)."""
    if isinstance(error, Throttled) and error.code not in _LOCAL_CODES:
        return error.retry_after if error.retry_after is not None else 1.0
    if error.transient and error.retry_after:
        return error.retry_after
    return None
