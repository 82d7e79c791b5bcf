"""The record of every HTTP exchange with Graph: one log line and one call-log entry.

The entry goes to the call log the application registered (ports.CallLog); a store that
cannot keep it must not turn a successful Graph call into a failure, so the log line is the
record of last resort.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from integrations.graph import ports
from integrations.graph.ports import GraphCallRecord, StoreUnavailable

# The logger keeps the name log pipelines and alerts already filter on.
logger = logging.getLogger("integrations.microsoft.graph")


def record(
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
    """One exchange: the `Graph API ...` line, and its entry (a single write, no reads)."""
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
    call = GraphCallRecord(
        method=method,
        route=route,
        status=status,
        duration_ms=duration_ms,
        throttled=throttled,
        retry_after=retry_after,
        request_id=request_id,
        error_code=error_code,
        mailbox=mailbox,
    )
    try:
        ports.call_log().record([call])
    except StoreUnavailable:
        logger.warning("Graph API call not recorded: database error", exc_info=True)


def record_batch(calls: Sequence[GraphCallRecord]) -> None:
    """The inner answers of one `$batch` (one write for all of them)."""
    if not calls:
        return
    try:
        ports.call_log().record(calls)
    except StoreUnavailable:
        logger.warning("Graph API batch results not recorded: database error", exc_info=True)
