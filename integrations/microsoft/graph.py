"""The single HTTP choke point for Microsoft Graph.

Everything that talks to Graph goes through `request()` (and its helpers `get`, `post`,
`patch`, `delete`, `iter_pages`, `batch`). It owns:

- one `requests.Session` per process with `trust_env=False`, so the machine's
  REQUESTS_CA_BUNDLE / proxies cannot override MICROSOFT_CA_BUNDLE (requests' trust_env),
  mandatory connect/read timeouts and a User-Agent;
- typed errors (errors.py) with `.transient` and `.retry_after` for the job layer;
- one retry loop (`request`: `send` one exchange, `classify` the outcome, `next_delay`):
  Retry-After (integer seconds or HTTP date), exponential backoff with full jitter otherwise;
  waits up to GRAPH_MAX_IN_PROCESS_WAIT_SECONDS are slept here (at most GRAPH_MAX_RETRIES
  times), longer ones are raised as `Throttled` so the job layer reschedules instead of
  holding a worker. A request Graph may have acted on (after a 429, a 5xx, a read timeout)
  is repeated only when it is repeatable (idempotent methods, or the caller says so);
- rate limits through throttle.py (per-mailbox gates and budgets, shared 429 windows keyed by
  the mailbox's Graph id): no request for a throttled mailbox leaves any worker before
  Retry-After has passed (a throttled attempt still counts against the budget: "Microsoft Graph
  throttling guidance");
- a 401 InvalidAuthenticationToken drops the cached token and retries once;
- one GraphCall row (a single INSERT) and one `Graph API ...` log line per HTTP exchange.

The limits are per process: with N worker processes the effective ceiling is N times as
high, which is why the budget leaves headroom and the 429 path is still handled.
"""

from __future__ import annotations

import email.utils
import enum
import logging
import random
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from integrations.microsoft import auth, http, teams_sender, throttle
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
from integrations.microsoft.models import GraphCall

logger = logging.getLogger("integrations.microsoft.graph")

TokenKind = Literal["app", "delegated"]
BATCH_LIMIT = 20  # "Combine multiple HTTP requests using JSON batching"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504, 509})
# 410 codes that mean "your delta token is gone, start over" ("Use delta query to track changes in
# Microsoft Graph data").
_DELTA_EXPIRED_CODES = {"syncstatenotfound", "resyncrequired", "syncstateinvalid"}


def reset_state() -> None:
    """Forget the session, gates and resolved mailbox ids (tests; settings changes)."""
    http.reset_session()
    throttle.reset_state()


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


def backoff_delay(attempt: int) -> float:
    """Full-jitter exponential backoff: uniform(0, base * 2**attempt), capped."""
    base = float(settings.GRAPH_BACKOFF_BASE_SECONDS)
    cap = float(settings.GRAPH_BACKOFF_MAX_SECONDS)
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
    """Sleep `delay` here when it is short; otherwise hand the wait to the job layer."""
    limit = float(settings.GRAPH_MAX_IN_PROCESS_WAIT_SECONDS)
    if delay <= limit:
        if delay > 0:
            time.sleep(delay)
        return
    if reason is not None:
        reason.retry_after = delay
        raise reason
    raise Throttled(
        f"{f'Mailbox {mailbox}' if mailbox else 'This request'} is throttled for {delay:.1f}s "
        "more; try later",
        retry_after=delay,
        method=method,
        route=route,
        code="LocalThrottle",
        may_have_acted=False,
    )


def await_turn(
    mailbox: str,
    windows: Iterable[str],
    reason: GraphError | None,
    *,
    method: str,
    route: str,
) -> None:
    """Wait (or raise Throttled) until the mailbox's budget and every 429 window allow a
    request (throttle.py owns them)."""
    while (turn := throttle.next_turn(mailbox, windows)).wait > 0:
        _wait_or_raise(turn.wait, reason, method=method, route=route, mailbox=mailbox)


def send(
    method: str,
    url: str,
    *,
    route: str,
    mailbox: str,
    token: str,
    json: Any = None,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | tuple[float, float],
) -> GraphResponse | GraphError:
    """One HTTP exchange, recorded (one GraphCall row, one log line). HTTP and transport
    failures come back as the typed error, never raised; only the mailbox's in-flight limit
    raises (Throttled LocalConcurrency: nothing was sent)."""
    send_headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if headers:
        send_headers.update(headers)
    gate = throttle.gate(mailbox) if mailbox else None
    started = time.monotonic()
    acquired = False
    lease: int | None = None
    try:
        if gate is not None:
            limit = float(sum(_as_pair(timeout)))
            acquired = gate.semaphore.acquire(timeout=limit)
            if acquired:
                # The same limit across every worker process (Graph counts per mailbox).
                lease = throttle.acquire_mailbox_lease(
                    mailbox, wait_seconds=limit, hold_seconds=limit + 5
                )
            if not acquired or lease is None:
                raise Throttled(
                    f"More than {settings.GRAPH_MAX_IN_FLIGHT_PER_MAILBOX} requests in "
                    f"flight for mailbox {mailbox}; try later",
                    retry_after=1.0,
                    method=method,
                    route=route,
                    code="LocalConcurrency",
                    may_have_acted=False,
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
        kind = type(exc).__name__
        _record(
            method=method,
            route=route,
            status=None,
            duration_ms=int((time.monotonic() - started) * 1000),
            retry_after=None,
            request_id="",
            error_code=kind,
            mailbox=mailbox,
        )
        # A connect timeout means nothing was sent; after that, Graph may have acted.
        return Transient(
            _describe_transport_error(exc),
            method=method,
            route=route,
            code=kind,
            may_have_acted=not isinstance(exc, requests.ConnectTimeout),
        )
    finally:
        if lease:
            throttle.release_mailbox_lease(lease)
        if acquired and gate is not None:
            gate.semaphore.release()

    duration = int((time.monotonic() - started) * 1000)
    body = _parse_body(response)
    if response.status_code < 400:
        request_id = (
            response.headers.get("request-id") or response.headers.get("client-request-id") or ""
        )
        _record(
            method=method,
            route=route,
            status=response.status_code,
            duration_ms=duration,
            retry_after=None,
            request_id=request_id,
            error_code="",
            mailbox=mailbox,
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
        mailbox=mailbox,
    )
    return error


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


def _window_of(error: GraphError) -> float | None:
    """The throttle window a failure opens: every 429 (1 s without Retry-After), and any
    other transient answer that carries Retry-After (503)."""
    if isinstance(error, Throttled) and error.code not in _LOCAL_CODES:
        return error.retry_after if error.retry_after is not None else 1.0
    if error.transient and error.retry_after:
        return error.retry_after
    return None


def request(
    method: str,
    path_or_url: str,
    *,
    json: Any = None,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    mailbox: str | None = None,
    windows: Iterable[str] = (),
    token_kind: TokenKind = "app",
    timeout: float | tuple[float, float] | None = None,
    max_retries: int | None = None,
    repeatable: bool | None = None,
) -> GraphResponse:
    """Send one Graph request with the policy described in the module docstring: the one
    retry loop for Graph.

    `mailbox` overrides the key derived from `/users/{id}/...`; `windows` are extra shared
    throttle keys (a Teams chat, the sender) waited on and blocked like the mailbox's.
    `repeatable` says whether Graph acting twice is harmless (default: the method is
    idempotent); `max_retries=0` disables in-process retries (interactive checks).
    Raises a GraphError subclass on failure.
    """
    method = method.upper()
    url = _absolute_url(path_or_url)
    route = route_template(path_or_url)
    mailbox_key = throttle.mailbox_id(mailbox if mailbox is not None else mailbox_of(path_or_url))
    windows = list(windows)
    repeatable = method in IDEMPOTENT_METHODS if repeatable is None else repeatable
    retries_left = int(settings.GRAPH_MAX_RETRIES if max_retries is None else max_retries)
    timeout = timeout or http.default_timeout()
    attempt = 0
    refresh = token_refreshed = False
    last_error: GraphError | None = None

    while True:
        await_turn(mailbox_key, windows, last_error, method=method, route=route)
        result = send(
            method,
            url,
            route=route,
            mailbox=mailbox_key,
            token=_bearer(token_kind, refresh=refresh),
            json=json,
            params=params,
            headers=headers,
            timeout=timeout,
        )
        refresh = False
        verdict = classify(result, repeatable=repeatable, token_refreshed=token_refreshed)
        if verdict is Verdict.DONE:
            assert isinstance(result, GraphResponse)
            return result
        assert isinstance(result, GraphError)
        error = last_error = result
        window = _window_of(error)
        if window is not None:
            throttle.throttled(mailbox_key, windows, window)
        if verdict is Verdict.REFRESH_TOKEN:
            refresh = token_refreshed = True
            continue
        delay = next_delay(error, attempt, retries_left) if verdict is Verdict.RETRY else None
        if delay is None:
            if error.transient and error.retry_after is None:
                error.retry_after = backoff_delay(attempt)  # for the job layer's reschedule
            raise error
        retries_left -= 1
        attempt += 1
        if window is None or not (mailbox_key or windows):
            _wait_or_raise(delay, error, method=method, route=route, mailbox=mailbox_key)
        # else: the window is the mailbox's (or a chat's): await_turn waits it out (or hands
        # it to the job layer), as it does for every other request under that key


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
    only; links are followed verbatim ("Use delta query to track changes in Microsoft Graph data").
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


def _send_batch_chunk(  # noqa: C901 (each inner answer classified as request() does)
    chunk: list[dict[str, Any]], *, mailbox: str | None, token_kind: TokenKind
) -> dict[str, BatchResult]:
    """One `$batch` POST of up to 20 requests, and its retries of failed inner requests.

    The same policy as request(): each inner request waits for its mailbox's turn (Graph
    throttles inner requests individually, "Microsoft Graph throttling guidance"; the outer POST
    itself is not gated), inner
    failures are classified by `classify` (an inner POST is not repeated after an answer it
    may have been acted on) and spaced by `next_delay`.
    """
    results: dict[str, BatchResult] = {}
    pending = chunk
    retries_left = int(settings.GRAPH_MAX_RETRIES)
    attempt = 0
    by_id = {entry["id"]: entry for entry in chunk}
    keys = {
        entry["id"]: throttle.mailbox_id(
            mailbox if mailbox is not None else mailbox_of(entry["url"])
        )
        for entry in chunk
    }
    while pending:
        for entry in pending:
            if keys[entry["id"]]:
                await_turn(keys[entry["id"]], (), None, method="POST", route="/$batch")
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
                # Repeating the envelope repeats every inner request.
                repeatable=all(entry["method"].upper() in IDEMPOTENT_METHODS for entry in pending),
            ).body
            or {}
        )

        retry: list[dict[str, Any]] = []
        delays: list[float] = []
        longest = 0.0
        rows = []
        for inner in body.get("responses", []):
            inner_id = str(inner.get("id"))
            if inner_id not in by_id:
                continue
            entry = by_id[inner_id]
            status = int(inner.get("status", 0))
            headers = {str(k): str(v) for k, v in (inner.get("headers") or {}).items()}
            header_map = requests.structures.CaseInsensitiveDict(headers)
            route = route_template(entry["url"])
            error = None
            if status >= 400:
                error = error_for(
                    status, inner.get("body"), header_map, method=entry["method"], route=route
                )
            inner_mailbox = keys[inner_id]
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
            if error is None:
                continue
            window = _window_of(error)
            if window is not None and inner_mailbox:
                throttle.throttled(inner_mailbox, (), window)
            repeatable = entry["method"].upper() in IDEMPOTENT_METHODS
            if classify(error, repeatable=repeatable, token_refreshed=True) is Verdict.RETRY:
                retry.append(entry)
                longest = max(longest, error.retry_after or 0.0)
                # A mailbox's window is waited out by its turn above; the rest sleep here.
                gated = window is not None and bool(inner_mailbox)
                delays.append(0.0 if gated else next_delay(error, attempt, retries_left) or 0.0)
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
        if longest > float(settings.GRAPH_MAX_IN_PROCESS_WAIT_SECONDS):
            break  # the callers reschedule using each result's retry_after
        retries_left -= 1
        attempt += 1
        delay = max(delays or [0.0])
        if delay > 0:
            time.sleep(delay)
        pending = retry
    return results
