"""The Microsoft Graph client: the single HTTP choke point for Graph, and app tokens.

Everything that talks to Graph goes through `request()` (and its helpers `get`, `post`,
`patch`, `delete`, `iter_pages`, `batch`), exported here. The package owns, one job a module:

- http.py: one `requests.Session` per process with `trust_env=False`, so the machine's
  REQUESTS_CA_BUNDLE / proxies cannot override MICROSOFT_CA_BUNDLE (requests' trust_env),
  mandatory connect/read timeouts and a User-Agent (MSAL sends through it too);
- auth.py: app-only tokens through MSAL with the active credential (a secret, a certificate
  or a client assertion);
- errors.py: typed errors with `.transient` and `.retry_after` for the job layer, and
  error_mapping.py: which of them a Graph answer is;
- request.py: the one retry loop (`send` one exchange, `classify` the outcome, `next_delay`):
  Retry-After (integer seconds or HTTP date), exponential backoff with full jitter otherwise;
  waits up to GRAPH_MAX_IN_PROCESS_WAIT_SECONDS are slept there (at most GRAPH_MAX_RETRIES
  times), longer ones are raised as `Throttled` so the job layer reschedules instead of
  holding a worker. A request Graph may have acted on (after a 429, a 5xx, a read timeout)
  is repeated only when it is repeatable (idempotent methods, or the caller says so).
  A 401 InvalidAuthenticationToken drops the cached token and retries once. exchange.py
  sends one exchange, retry_policy.py decides what follows;
- throttle.py: rate limits (per-mailbox gates and budgets, shared 429 windows keyed by the
  mailbox's Graph id): no request for a throttled mailbox leaves any worker before
  Retry-After has passed (a throttled attempt still counts against the budget: "Microsoft
  Graph throttling guidance");
- call_log.py: one call-log entry and one `Graph API ...` log line per HTTP exchange;
- routes.py (route templates, mailboxes, the Graph host), pages.py (`@odata.nextLink`),
  batch.py (`$batch`), kinds.py (resource kinds, Graph date-times).

It imports nothing from the portal or the integration: the credential store, the call log,
the shared throttle rows and the delegated token come in through ports.py, registered at
start-up (tests/test_import_graph.py enforces it).

The limits are per process: with N worker processes the effective ceiling is N times as
high, which is why the budget leaves headroom and the 429 path is still handled.
"""

from __future__ import annotations

from integrations.graph import http, throttle
from integrations.graph.batch import BatchResult, batch
from integrations.graph.exchange import GraphResponse
from integrations.graph.pages import Pages, iter_pages
from integrations.graph.request import TokenKind, delete, get, patch, post, request

__all__ = [
    "BatchResult",
    "GraphResponse",
    "Pages",
    "TokenKind",
    "batch",
    "delete",
    "get",
    "iter_pages",
    "patch",
    "post",
    "request",
    "reset_state",
]


def reset_state() -> None:
    """Forget the session, gates and resolved mailbox ids (tests; settings changes)."""
    http.reset_session()
    throttle.reset_state()
