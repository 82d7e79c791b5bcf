"""The single HTTP choke point for Microsoft Graph.

Everything that talks to Graph goes through `request()` (and its helpers `get`, `post`,
`patch`, `delete`, `iter_pages`, `batch`). It owns:

- one `requests.Session` per process with `trust_env=False`, so the machine's
  REQUESTS_CA_BUNDLE / proxies cannot override MICROSOFT_CA_BUNDLE (stack-notes.md §9.9),
  mandatory connect/read timeouts and a User-Agent;
- typed errors (errors.py) with `.transient` and `.retry_after` for the job layer;
- Retry-After (integer seconds or HTTP date), exponential backoff with full jitter otherwise;
  waits up to GRAPH_MAX_IN_PROCESS_WAIT_SECONDS are slept here (at most GRAPH_MAX_RETRIES
  times), longer ones are raised as `Throttled` so the job layer reschedules instead of
  holding a worker;
- per mailbox (graph-reference.md §6.3, "per app ID + mailbox"): at most
  GRAPH_MAX_IN_FLIGHT_PER_MAILBOX requests in flight, a token bucket of
  GRAPH_MAILBOX_BUDGET_PER_10_MIN per 600 s, and a "blocked until" window after a 429 so that
  no request for that mailbox leaves this process before Retry-After has passed (§6.2: a
  throttled attempt still counts against the budget);
- a 401 InvalidAuthenticationToken drops the cached token and retries once;
- one GraphCall row (a single INSERT) and one `Graph API ...` log line per HTTP exchange.

The limits are per process: with N worker processes the effective ceiling is N times as
high, which is why the budget leaves headroom and the 429 path is still handled.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from integrations.microsoft import auth, http, teams_sender
from integrations.microsoft.errors import (
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
from integrations.microsoft.models import GraphCall, SendBudget

logger = logging.getLogger("integrations.microsoft.graph")

TokenKind = Literal["app", "delegated"]
BATCH_LIMIT = 20  # graph-reference.md §6.4
BUDGET_WINDOW_SECONDS = 600.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504, 509})
# 410 codes that mean "your delta token is gone, start over" (graph-reference.md §4.4).
_DELTA_EXPIRED_CODES = {"syncstatenotfound", "resyncrequired", "syncstateinvalid"}


# --------------------------------------------------------------------------- mailbox gates


class _MailboxGate:
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


_gates_lock = threading.Lock()
_gates: dict[str, _MailboxGate] = {}


def _gate(mailbox: str) -> _MailboxGate:
    with _gates_lock:
        gate = _gates.get(mailbox)
        if gate is None:
            gate = _gates[mailbox] = _MailboxGate(
                int(settings.GRAPH_MAX_IN_FLIGHT_PER_MAILBOX),
                int(settings.GRAPH_MAILBOX_BUDGET_PER_10_MIN),
            )
        return gate


# Retry-After windows are shared with the other worker processes through the database
# (SendBudget rows keyed "graph-mailbox:<mailbox>"): a 429 seen by one worker stops every
# worker from calling that mailbox. One primary-key lookup before each call, against a
# network call of tens of milliseconds.
SHARED_WINDOW_PREFIX = "graph-mailbox:"


def _shared_key(mailbox: str) -> str:
    return (SHARED_WINDOW_PREFIX + mailbox)[:300]


def _share_block(mailbox: str, seconds: float) -> None:
    now = timezone.now()
    until = now + timedelta(seconds=seconds)
    key = _shared_key(mailbox)
    try:
        if not SendBudget.objects.filter(key=key).update(blocked_until=until):
            SendBudget.objects.get_or_create(
                key=key, defaults={"next_slot_at": now, "blocked_until": until}
            )
    except DatabaseError:  # sharing is best effort; this process still honours the window
        logger.warning("Could not share the Retry-After window of %s", mailbox, exc_info=True)


def _adopt_shared_block(mailbox: str, gate: _MailboxGate) -> None:
    """Apply a window another process recorded for this mailbox."""

    try:
        until = (
            SendBudget.objects.filter(key=_shared_key(mailbox))
            .values_list("blocked_until", flat=True)
            .first()
        )
    except DatabaseError:
        return
    if until is not None:
        remaining = (until - timezone.now()).total_seconds()
        if remaining > 0:
            gate.block_for(remaining)


def mailbox_blocked_for(mailbox: str) -> float:
    """Seconds left in a mailbox's throttle window (0 when it may send). For the console."""
    with _gates_lock:
        gate = _gates.get(mailbox.lower())
    if gate is None:
        return 0.0
    return max(0.0, gate.blocked_until - time.monotonic())


def reset_state() -> None:
    """Forget sessions, gates and throttle windows (tests; settings changes)."""
    http.reset_session()
    with _gates_lock:
        _gates.clear()


# --------------------------------------------------------------------------- routes


# Collections whose next segment is an id (or a well-known name such as `inbox`).
_COLLECTIONS = {
    "users",
    "messages",
    "mailfolders",
    "childfolders",
    "chats",
    "teams",
    "channels",
    "subscriptions",
    "replies",
    "events",
    "applications",
    "attachments",
    "contacts",
    "groups",
    "members",
    "serviceprincipals",
    "calendars",
    "drives",
    "items",
    "sites",
    "lists",
    "installedapps",
    "tabs",
    "hostedcontents",
    "tags",
    "onlinemeetings",
}
# Functions/actions that follow a collection but are not ids.
_NOT_IDS = {
    "delta",
    "getallmessages",
    "getallretainedmessages",
    "sendmail",
    "send",
    "reply",
    "replyall",
    "forward",
    "move",
    "copy",
    "reauthorize",
    "$count",
    "$ref",
    "$value",
    "addpassword",
    "removepassword",
    "createreply",
    "createreplyall",
    "createforward",
    "getbyids",
    "$batch",
    "microsoft.graph.delta()",
    "delta()",
}
_KEY_SEGMENT = re.compile(r"^([A-Za-z]+)\((.+)\)$")  # users('id') / messages(id)


def graph_base() -> str:
    return settings.MICROSOFT_GRAPH_URL.rstrip("/")


def _relative_path(path_or_url: str) -> str:
    """The path below the Graph version root, without the query string."""
    parts = urlsplit(path_or_url)
    path = parts.path
    if parts.scheme:
        base_path = urlsplit(graph_base()).path.rstrip("/")
        if base_path and path.startswith(base_path):
            path = path[len(base_path) :]
        else:
            # An absolute link without our version prefix (e.g. another version): drop it.
            path = re.sub(r"^/(v1\.0|beta)(?=/)", "", path)
    return path or "/"


def route_template(path_or_url: str) -> str:
    """`/users/ab12/mailFolders/inbox/messages/delta?$skiptoken=..` →
    `/users/{id}/mailFolders/{id}/messages/delta`. Low-cardinality for metrics, no PII."""
    segments = [s for s in _relative_path(path_or_url).split("/") if s]
    out: list[str] = []
    previous = ""
    for segment in segments:
        keyed = _KEY_SEGMENT.match(segment)
        lower = segment.lower()
        if keyed:
            out.append(f"{keyed.group(1)}({{id}})")
            previous = keyed.group(1).lower()
            continue
        if previous in _COLLECTIONS and lower not in _NOT_IDS and lower not in _COLLECTIONS:
            out.append("{id}")
            previous = ""
            continue
        out.append(segment)
        previous = lower
    return ("/" + "/".join(out))[:300]


def mailbox_of(path_or_url: str) -> str:
    """The mailbox key (user id or UPN, lower-cased) from a `/users/{id}/...` path, or ""."""
    segments = [s for s in _relative_path(path_or_url).split("/") if s]
    if len(segments) >= 2 and segments[0].lower() == "users":
        return segments[1].strip("'").lower()
    if segments:
        keyed = _KEY_SEGMENT.match(segments[0])
        if keyed and keyed.group(1).lower() == "users":
            return keyed.group(2).strip("'").lower()
    return ""


def _absolute_url(path_or_url: str) -> str:
    base = graph_base()
    if "://" not in path_or_url:
        return base + "/" + path_or_url.lstrip("/")
    # Never send our bearer token to a host that is not the configured Graph host: nextLink
    # and deltaLink URLs come from responses and are followed verbatim.
    got, want = urlsplit(path_or_url), urlsplit(base)
    if (got.scheme, got.netloc.lower()) != (want.scheme, want.netloc.lower()):
        raise ValueError(
            f"Refusing to call {got.scheme}://{got.netloc}: not the Graph host "
            f"{want.scheme}://{want.netloc} (MICROSOFT_GRAPH_URL)."
        )
    return path_or_url


# --------------------------------------------------------------------------- errors


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
    kwargs = {
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


def backoff_delay(attempt: int) -> float:
    """Full-jitter exponential backoff: uniform(0, base * 2**attempt), capped."""
    base = float(getattr(settings, "GRAPH_BACKOFF_BASE_SECONDS", 1.0))
    cap = float(getattr(settings, "GRAPH_BACKOFF_MAX_SECONDS", 60.0))
    return random.uniform(0.0, min(cap, base * (2**attempt)))


# --------------------------------------------------------------------------- recording


def _record(
    *,
    method: str,
    route: str,
    status: int | None,
    duration_ms: int,
    retry_after: float | None,
    request_id: str,
    error_code: str,
    mailbox: str,
) -> None:
    throttled = status == 429
    logger.log(
        logging.WARNING if status is None or status >= 500 or throttled else logging.INFO,
        "Graph API %s %s %s %dms request-id=%s%s%s",
        method,
        route,
        status if status is not None else "no-response",
        duration_ms,
        request_id or "-",
        f" error={error_code}" if error_code else "",
        f" retry-after={retry_after:g}" if retry_after is not None else "",
    )

    # One INSERT, no reads. A broken database must not turn a successful Graph call into a
    # failure (the log line above still has it).
    try:
        GraphCall.objects.create(
            method=method,
            route=route,
            status=status,
            duration_ms=duration_ms,
            throttled=throttled,
            retry_after=retry_after,
            request_id=request_id[:64],
            error_code=error_code[:100],
            mailbox=mailbox[:255],
        )
    except DatabaseError:
        logger.warning("Graph API call not recorded: database error", exc_info=True)


# --------------------------------------------------------------------------- request


@dataclass
class GraphResponse:
    status: int
    headers: Any  # a case-insensitive mapping
    body: Any  # parsed JSON, or None for empty bodies
    request_id: str = ""
    url: str = ""


def _bearer(token_kind: TokenKind, *, refresh: bool = False) -> str:
    if token_kind == "delegated":
        return teams_sender.delegated_token(force_refresh=refresh)
    if refresh:
        auth.drop_cached_app_token()
    return auth.app_token()


def _wait_or_raise(
    delay: float, reason: GraphError | None, *, method: str, route: str, mailbox: str
) -> None:
    limit = float(settings.GRAPH_MAX_IN_PROCESS_WAIT_SECONDS)
    if delay <= limit:
        if delay > 0:
            time.sleep(delay)
        return
    if reason is not None:
        reason.retry_after = delay
        raise reason
    raise Throttled(
        f"Mailbox {mailbox} is throttled for {delay:.1f}s more; try later",
        retry_after=delay,
        method=method,
        route=route,
        code="LocalThrottle",
    )


def request(
    method: str,
    path_or_url: str,
    *,
    json: Any = None,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    mailbox: str | None = None,
    token_kind: TokenKind = "app",
    timeout: float | tuple[float, float] | None = None,
    max_retries: int | None = None,
) -> GraphResponse:
    """Send one Graph request with the policy described in the module docstring.

    `mailbox` overrides the key derived from `/users/{id}/...`; `max_retries=0` disables
    in-process retries (interactive checks). Raises a GraphError subclass on failure.
    """
    method = method.upper()
    url = _absolute_url(path_or_url)
    route = route_template(path_or_url)
    mailbox_key = (mailbox if mailbox is not None else mailbox_of(path_or_url)).lower()
    retries_left = int(settings.GRAPH_MAX_RETRIES if max_retries is None else max_retries)
    timeout = timeout or http.default_timeout()
    gate = _gate(mailbox_key) if mailbox_key else None
    reauthenticated = False
    attempt = 0
    refresh_token = False
    last_error: GraphError | None = None

    while True:
        if gate is not None:
            _adopt_shared_block(mailbox_key, gate)
            # Budget and 429 window: sleep here when short, else hand back to the job layer.
            while (wait := gate.wait_needed()) > 0:
                _wait_or_raise(wait, last_error, method=method, route=route, mailbox=mailbox_key)
        token = _bearer(token_kind, refresh=refresh_token)
        refresh_token = False
        send_headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if headers:
            send_headers.update(headers)

        error: GraphError
        started = time.monotonic()
        acquired = False
        try:
            if gate is not None:
                acquired = gate.semaphore.acquire(timeout=float(sum(_as_pair(timeout))))
                if not acquired:
                    raise Throttled(
                        f"More than {settings.GRAPH_MAX_IN_FLIGHT_PER_MAILBOX} requests in "
                        f"flight for mailbox {mailbox_key}; try later",
                        retry_after=1.0,
                        method=method,
                        route=route,
                        code="LocalConcurrency",
                    )
            response = http.session().request(
                method,
                url,
                json=json,
                params=params,
                headers=send_headers,
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            duration = int((time.monotonic() - started) * 1000)
            kind = type(exc).__name__
            _record(
                method=method,
                route=route,
                status=None,
                duration_ms=duration,
                retry_after=None,
                request_id="",
                error_code=kind,
                mailbox=mailbox_key,
            )
            error = Transient(_describe_transport_error(exc), method=method, route=route, code=kind)
            # A POST that may have reached Graph is not repeated here: the job layer's
            # idempotency guard decides. A connect timeout means nothing was sent.
            safe = method in IDEMPOTENT_METHODS or isinstance(exc, requests.ConnectTimeout)
            if safe and retries_left > 0:
                retries_left -= 1
                _wait_or_raise(
                    backoff_delay(attempt), error, method=method, route=route, mailbox=mailbox_key
                )
                attempt += 1
                continue
            raise error from None
        finally:
            if acquired and gate is not None:
                gate.semaphore.release()

        duration = int((time.monotonic() - started) * 1000)
        body = _parse_body(response)
        request_id = (
            response.headers.get("request-id") or response.headers.get("client-request-id") or ""
        )
        if response.status_code < 400:
            _record(
                method=method,
                route=route,
                status=response.status_code,
                duration_ms=duration,
                retry_after=None,
                request_id=request_id,
                error_code="",
                mailbox=mailbox_key,
            )
            return GraphResponse(response.status_code, response.headers, body, request_id, url)

        error = error_for(response.status_code, body, response.headers, method=method, route=route)
        _record(
            method=method,
            route=route,
            status=response.status_code,
            duration_ms=duration,
            retry_after=error.retry_after,
            request_id=error.request_id,
            error_code=error.code,
            mailbox=mailbox_key,
        )
        last_error = error

        if (
            response.status_code == 401
            and not reauthenticated
            and error.code in ("InvalidAuthenticationToken", "")
        ):
            # The cached token was revoked or expired early: get a new one, once.
            reauthenticated = True
            refresh_token = True
            continue
        if isinstance(error, Throttled) and gate is not None:
            window = error.retry_after if error.retry_after is not None else 1.0
            gate.block_for(window)
            _share_block(mailbox_key, window)
        if not error.transient:
            raise error
        if retries_left <= 0:
            if error.retry_after is None:
                error.retry_after = backoff_delay(attempt)
            raise error
        retries_left -= 1
        if isinstance(error, Throttled) and gate is not None:
            attempt += 1
            continue  # the gate's blocked window does the waiting (or raises)
        delay = error.retry_after if error.retry_after is not None else backoff_delay(attempt)
        _wait_or_raise(delay, error, method=method, route=route, mailbox=mailbox_key)
        attempt += 1


def _as_pair(timeout: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(timeout, tuple):
        return timeout
    return (float(timeout), float(timeout))


def _parse_body(response: requests.Response) -> Any:
    if not response.content:
        return None
    if "json" in response.headers.get("Content-Type", ""):
        try:
            return response.json()
        except ValueError:
            return None
    return response.text


def _describe_transport_error(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return "Connecting to Graph timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "Graph did not answer within the read timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake with Graph failed (is MICROSOFT_CA_BUNDLE right for this host?)"
    if isinstance(exc, requests.ConnectionError):
        return "Could not connect to Graph (connection refused or reset)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "The connection to Graph broke while reading the response"
    return f"HTTP error talking to Graph ({type(exc).__name__})"


# --------------------------------------------------------------------------- helpers


def get(path_or_url: str, **kwargs: Any) -> Any:
    return request("GET", path_or_url, **kwargs).body


def post(path_or_url: str, json: Any = None, **kwargs: Any) -> Any:
    return request("POST", path_or_url, json=json, **kwargs).body


def patch(path_or_url: str, json: Any = None, **kwargs: Any) -> Any:
    return request("PATCH", path_or_url, json=json, **kwargs).body


def delete(path_or_url: str, **kwargs: Any) -> None:
    request("DELETE", path_or_url, **kwargs)


class Pages:
    """Iterate the pages of a collection or delta round, following `@odata.nextLink`.

    After the iteration, `delta_link` holds the round's `@odata.deltaLink` (None for plain
    collections) and `next_link` the last link followed. Query options go on the first call
    only; links are followed verbatim (graph-reference.md §4.1).
    """

    def __init__(
        self,
        path_or_url: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        mailbox: str | None = None,
        token_kind: TokenKind = "app",
        max_pages: int | None = None,
    ) -> None:
        self.start = path_or_url
        self.params = params
        self.headers = headers
        self.mailbox = mailbox
        self.token_kind = token_kind
        self.max_pages = max_pages
        self.delta_link: str | None = None
        self.next_link: str | None = None
        self.pages = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        url: str | None = self.start
        params = self.params
        while url:
            page = (
                request(
                    "GET",
                    url,
                    params=params,
                    headers=self.headers,
                    mailbox=self.mailbox,
                    token_kind=self.token_kind,
                ).body
                or {}
            )
            params = None
            self.pages += 1
            yield page
            self.delta_link = page.get("@odata.deltaLink") or self.delta_link
            url = page.get("@odata.nextLink")
            if url:
                self.next_link = url
            if self.max_pages is not None and self.pages >= self.max_pages:
                return

    def items(self) -> Iterator[dict[str, Any]]:
        for page in self:
            yield from page.get("value", [])


def iter_pages(path_or_url: str, **kwargs: Any) -> Pages:
    """`for page in (pages := iter_pages(url)): ...` then `pages.delta_link`."""
    return Pages(path_or_url, **kwargs)


@dataclass
class BatchResult:
    id: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: GraphError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def batch(
    requests_: list[dict[str, Any]], *, mailbox: str | None = None, token_kind: TokenKind = "app"
) -> list[BatchResult]:
    """Send requests through `$batch` (≤ 20 per POST) and return results in input order.

    Each request is `{"method", "url", optional "id", "body", "headers", "dependsOn"}` with
    `url` relative to the version root. Inner 429/503/504 are retried (only the failed
    sub-requests, after the largest inner Retry-After) within the in-process limits; inner
    errors that remain are returned as `BatchResult.error`, never raised.
    """
    prepared: list[dict[str, Any]] = []
    for index, item in enumerate(requests_):
        entry = {
            "id": str(item.get("id", index + 1)),
            "method": item.get("method", "GET"),
            "url": "/" + str(item["url"]).lstrip("/"),
        }
        if "body" in item:
            entry["body"] = item["body"]
            entry["headers"] = {"Content-Type": "application/json", **item.get("headers", {})}
        elif item.get("headers"):
            entry["headers"] = dict(item["headers"])
        if item.get("dependsOn"):
            entry["dependsOn"] = list(item["dependsOn"])
        prepared.append(entry)
    ids = [entry["id"] for entry in prepared]
    if len(set(ids)) != len(ids):
        raise ValueError("$batch request ids must be unique")

    results: dict[str, BatchResult] = {}
    for start in range(0, len(prepared), BATCH_LIMIT):
        chunk = prepared[start : start + BATCH_LIMIT]
        results.update(_send_batch_chunk(chunk, mailbox=mailbox, token_kind=token_kind))
    return [results[i] for i in ids]


def _send_batch_chunk(
    chunk: list[dict[str, Any]], *, mailbox: str | None, token_kind: TokenKind
) -> dict[str, BatchResult]:
    results: dict[str, BatchResult] = {}
    pending = chunk
    retries_left = int(settings.GRAPH_MAX_RETRIES)
    by_id = {entry["id"]: entry for entry in chunk}
    while pending:
        # Each inner request counts against its mailbox's budget and must respect its 429
        # window (Graph throttles inner requests individually, §6.4). The outer POST itself
        # is not gated: Graph fans a batch out at most 4 at a time per mailbox.
        for entry in pending:
            key = mailbox if mailbox is not None else mailbox_of(entry["url"])
            if key:
                gate = _gate(key.lower())
                _adopt_shared_block(key.lower(), gate)
                while (wait := gate.wait_needed()) > 0:
                    _wait_or_raise(wait, None, method="POST", route="/$batch", mailbox=key)
        sent_ids = {entry["id"] for entry in pending}
        body = (
            request(
                "POST",
                "/$batch",
                json={
                    "requests": [
                        {
                            k: v
                            for k, v in entry.items()
                            if k != "dependsOn" or all(d in sent_ids for d in v)
                        }
                        for entry in pending
                    ]
                },
                mailbox="",
                token_kind=token_kind,
            ).body
            or {}
        )

        retry: list[dict[str, Any]] = []
        gated_only = True  # every retry waits on a mailbox window (no extra sleep needed)
        largest_wait = 0.0
        rows = []
        for inner in body.get("responses", []):
            inner_id = str(inner.get("id"))
            entry = by_id.get(inner_id)
            if entry is None:
                continue
            status = int(inner.get("status", 0))
            headers = {str(k): str(v) for k, v in (inner.get("headers") or {}).items()}
            header_map = requests.structures.CaseInsensitiveDict(headers)
            route = route_template(entry["url"])
            error = None
            if status >= 400:
                error = error_for(
                    status, inner.get("body"), header_map, method=entry["method"], route=route
                )
            inner_mailbox = (mailbox if mailbox is not None else mailbox_of(entry["url"])).lower()
            rows.append(
                GraphCall(
                    method=entry["method"][:8],
                    route=route,
                    status=status or None,
                    throttled=status == 429,
                    retry_after=error.retry_after if error else None,
                    request_id=(error.request_id if error else header_map.get("request-id", ""))[
                        :64
                    ],
                    error_code=(error.code if error else "")[:100],
                    mailbox=inner_mailbox[:255],
                    in_batch=True,
                )
            )
            results[inner_id] = BatchResult(inner_id, status, headers, inner.get("body"), error)
            if error is not None and error.transient:
                wait = error.retry_after if error.retry_after is not None else 0.0
                if isinstance(error, Throttled) and inner_mailbox:
                    _gate(inner_mailbox).block_for(wait or 1.0)
                    _share_block(inner_mailbox, wait or 1.0)
                else:
                    gated_only = False
                largest_wait = max(largest_wait, wait)
                retry.append(entry)
        try:
            GraphCall.objects.bulk_create(rows)  # one INSERT for all inner results
        except DatabaseError:
            logger.warning("Graph API batch results not recorded: database error", exc_info=True)
        for entry in pending:
            if entry["id"] not in results:
                results[entry["id"]] = BatchResult(
                    entry["id"],
                    0,
                    error=Transient(
                        "Graph's $batch response did not include this request",
                        method=entry["method"],
                        route=route_template(entry["url"]),
                    ),
                )
        if not retry or retries_left <= 0:
            break
        if largest_wait > float(settings.GRAPH_MAX_IN_PROCESS_WAIT_SECONDS):
            break  # the callers reschedule using each result's retry_after
        retries_left -= 1
        delay = largest_wait or backoff_delay(int(settings.GRAPH_MAX_RETRIES) - retries_left)
        if delay > 0 and not gated_only:
            time.sleep(delay)
        pending = retry
    return results
