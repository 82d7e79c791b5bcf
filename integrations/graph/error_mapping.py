"""Which GraphError a Graph answer is: the status, Graph's error body and Retry-After.

Used for every answer (request's exchanges and `$batch`'s inner answers alike).
"""

from __future__ import annotations

import email.utils
from typing import Any

from django.utils import timezone

from integrations.graph.errors import (
    AuthError,
    Conflict,
    DeltaTokenExpired,
    GraphError,
    GraphPermissionDenied,
    GraphValidationError,
    NotFound,
    Permanent,
    Throttled,
    Transient,
)

TRANSIENT_STATUSES = frozenset({500, 502, 503, 504, 509})
# 410 codes that mean "your delta token is gone, start over" ("Use delta query to track changes in
# Microsoft Graph data").
_DELTA_EXPIRED_CODES = {"syncstatenotfound", "resyncrequired", "syncstateinvalid"}


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: integer (Graph), decimal (old docs) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - timezone.now()).total_seconds())


def _error_body(body: Any) -> tuple[str, str, str]:
    """(code, message, request-id) from Graph's `{"error": {...}}` shape."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        inner = err.get("innerError") or err.get("innererror") or {}
        return (
            str(err.get("code") or ""),
            str(err.get("message") or "")[:500],
            str(inner.get("request-id") or "") if isinstance(inner, dict) else "",
        )
    return "", "", ""


def error_for(
    status: int, body: Any, headers: Any, *, method: str = "", route: str = ""
) -> GraphError:
    """The typed error for a non-2xx Graph response (also used for `$batch` inner results)."""
    code, message, body_request_id = _error_body(body)
    request_id = (
        (headers.get("request-id") or headers.get("client-request-id") or body_request_id or "")
        if headers
        else body_request_id
    )
    retry_after = parse_retry_after(headers.get("Retry-After") if headers else None)
    message = message or f"Graph answered HTTP {status}"
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "request_id": request_id,
        "retry_after": retry_after,
        "method": method,
        "route": route,
    }
    if status == 429:
        return Throttled(message, **kwargs)
    if status in TRANSIENT_STATUSES or status >= 500:
        return Transient(message, **kwargs)
    if status == 401:
        return AuthError(message, **kwargs)
    if status == 403:
        return GraphPermissionDenied(message, **kwargs)
    if status == 404:
        return NotFound(message, **kwargs)
    if status in (409, 412):
        return Conflict(message, **kwargs)
    if status == 410 and (
        code.lower() in _DELTA_EXPIRED_CODES or "delta" in route.lower() or not code
    ):
        return DeltaTokenExpired(message, **kwargs)
    if status == 400:
        return GraphValidationError(message, **kwargs)
    return Permanent(message, **kwargs)
