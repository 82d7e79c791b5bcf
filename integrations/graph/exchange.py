"""One HTTP exchange with Graph: through the mailbox's in-flight limit, recorded, and its
outcome as a GraphResponse or the typed GraphError (never raised, except our own refusal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings

from integrations.graph import call_log, http, throttle
from integrations.graph.error_mapping import error_for
from integrations.graph.errors import GraphError, Throttled, Transient


@dataclass
class GraphResponse:
    status: int
    headers: Any  # a case-insensitive mapping
    body: Any  # parsed JSON, or None for empty bodies
    request_id: str = ""
    url: str = ""


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
        call_log.record(
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
        call_log.record(
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
    call_log.record(
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
