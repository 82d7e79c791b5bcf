"""The one retry loop for Graph: `request()` and its verbs `get`, `post`, `patch`, `delete`.

Each turn waits for the mailbox's turn (throttle.py: budgets and shared 429 windows), sends
one exchange (exchange.py) with an app or delegated token, and asks the retry policy
(retry_policy.py) what to do with the outcome. Waits up to GRAPH_MAX_IN_PROCESS_WAIT_SECONDS
are slept here; longer ones are raised as `Throttled` so the job layer reschedules instead of
holding a worker. A 401 InvalidAuthenticationToken drops the cached token and retries once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Literal

from django.conf import settings

from integrations.graph import auth, http, ports, throttle
from integrations.graph.errors import GraphError, Throttled
from integrations.graph.exchange import GraphResponse, send
from integrations.graph.retry_policy import (
    IDEMPOTENT_METHODS,
    Verdict,
    backoff_delay,
    classify,
    next_delay,
    window_of,
)
from integrations.graph.routes import absolute_url, mailbox_of, route_template

TokenKind = Literal["app", "delegated"]


def _bearer(token_kind: TokenKind, *, refresh: bool = False) -> str:
    if token_kind == "delegated":
        return ports.delegated_token(force_refresh=refresh)
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
    url = absolute_url(path_or_url)
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
        window = window_of(error)
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


def get(path_or_url: str, **kwargs: Any) -> Any:
    return request("GET", path_or_url, **kwargs).body


def post(path_or_url: str, json: Any = None, **kwargs: Any) -> Any:
    return request("POST", path_or_url, json=json, **kwargs).body


def patch(path_or_url: str, json: Any = None, **kwargs: Any) -> Any:
    return request("PATCH", path_or_url, json=json, **kwargs).body


def delete(path_or_url: str, **kwargs: Any) -> None:
    request("DELETE", path_or_url, **kwargs)
