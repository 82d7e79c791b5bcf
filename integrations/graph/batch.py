"""JSON batching: up to 20 requests in one `$batch` POST, under the same policy as request().

Inner answers are classified as request() classifies an exchange, each gets its call-log
entry (one write per POST), and inner 429/503/504 are retried within the in-process limits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests
from django.conf import settings

from integrations.graph import call_log, throttle
from integrations.graph.error_mapping import error_for
from integrations.graph.errors import GraphError, Transient
from integrations.graph.ports import GraphCallRecord
from integrations.graph.request import TokenKind, await_turn, request
from integrations.graph.retry_policy import (
    IDEMPOTENT_METHODS,
    Verdict,
    classify,
    next_delay,
    window_of,
)
from integrations.graph.routes import mailbox_of, route_template

BATCH_LIMIT = 20  # "Combine multiple HTTP requests using JSON batching"


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
        rows: list[GraphCallRecord] = []
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
                GraphCallRecord(
                    method=entry["method"],
                    route=route,
                    status=status or None,
                    throttled=status == 429,
                    retry_after=error.retry_after if error else None,
                    request_id=error.request_id if error else header_map.get("request-id", ""),
                    error_code=error.code if error else "",
                    mailbox=inner_mailbox,
                    in_batch=True,
                )
            )
            results[inner_id] = BatchResult(inner_id, status, headers, inner.get("body"), error)
            if error is None:
                continue
            window = window_of(error)
            if window is not None and inner_mailbox:
                throttle.throttled(inner_mailbox, (), window)
            repeatable = entry["method"].upper() in IDEMPOTENT_METHODS
            if classify(error, repeatable=repeatable, token_refreshed=True) is Verdict.RETRY:
                retry.append(entry)
                longest = max(longest, error.retry_after or 0.0)
                # A mailbox's window is waited out by its turn above; the rest sleep here.
                gated = window is not None and bool(inner_mailbox)
                delays.append(0.0 if gated else next_delay(error, attempt, retries_left) or 0.0)
        call_log.record_batch(rows)  # one write for all inner results
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
