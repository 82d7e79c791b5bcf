"""The HTTP session for Graph and the identity platform: timeouts, TLS trust, User-Agent.

Both graph.py (the choke point for Graph) and MSAL (auth.py, portal.access.sso) send through a
Session built here, so neither has to import the other to share it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from django.conf import settings

USER_AGENT = "FleetGraphPortal/0.1 (+https://github.com/fleet/graph-portal)"


class _TimeoutSession(requests.Session):
    """A Session that never waits forever: MSAL calls it without a timeout."""

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = default_timeout()
        return super().request(method, url, *args, **kwargs)


_local = threading.local()


def default_timeout() -> tuple[float, float]:
    """(connect, read) seconds; `timeout_cap()` can lower them for interactive checks."""
    connect, read = float(settings.GRAPH_CONNECT_TIMEOUT), float(settings.GRAPH_READ_TIMEOUT)
    cap = getattr(_local, "cap", None)
    if cap is not None:
        connect, read = min(connect, cap), min(read, cap)
    return (connect, read)


@contextmanager
def timeout_cap(seconds: float) -> Iterator[None]:
    """Within this block (this thread), no HTTP call here or in MSAL waits longer."""
    previous = getattr(_local, "cap", None)
    _local.cap = seconds
    try:
        yield
    finally:
        _local.cap = previous


def build_session() -> requests.Session:
    """A new Session configured for Graph and the identity platform (also MSAL's http_client).

    trust_env=False: otherwise requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE and proxy
    variables override `verify` (requests' trust_env).
    """
    session = _TimeoutSession()
    session.trust_env = False
    session.verify = settings.MICROSOFT_CA_BUNDLE or True
    session.headers["User-Agent"] = USER_AGENT
    # Pool size above the per-mailbox gate so concurrent mailboxes don't queue on sockets.
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


_session_lock = threading.Lock()
_session: requests.Session | None = None
_session_key: str | None = None


def session() -> requests.Session:
    """The process-wide Graph session (rebuilt when the CA bundle setting changes)."""
    global _session, _session_key
    key = str(settings.MICROSOFT_CA_BUNDLE or "")
    with _session_lock:
        if _session is None or _session_key != key:
            if _session is not None:
                _session.close()
            _session, _session_key = build_session(), key
        return _session


def reset_session() -> None:
    """Close and forget the process-wide session (tests; settings changes)."""
    global _session, _session_key
    with _session_lock:
        if _session is not None:
            _session.close()
        _session, _session_key = None, None
