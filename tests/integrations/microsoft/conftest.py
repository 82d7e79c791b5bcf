from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django_q.conf import Conf

from integrations.graph_emulator.pytest_plugin import emulator, graph_emulator  # noqa: F401
from integrations.graph_emulator.testing import RunningEmulator
from integrations.microsoft import auth, graph


def reset_singletons() -> None:
    """Forget the process-wide MSAL apps, sessions, gates and throttle windows."""
    auth.invalidate()
    graph.reset_state()


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    reset_singletons()
    yield
    reset_singletons()


@pytest.fixture
def graph_settings(settings: Any, emulator: RunningEmulator) -> Any:
    """Point the portal at the (freshly reset) emulator; fast retry timings for tests."""
    settings.MICROSOFT_AUTHORITY_HOST = emulator.authority_host
    settings.MICROSOFT_GRAPH_URL = emulator.graph_url
    settings.MICROSOFT_TENANT_ID = emulator.tenant_id
    settings.MICROSOFT_CLIENT_ID = emulator.client_id
    settings.MICROSOFT_CLIENT_SECRET = emulator.client_secret
    settings.MICROSOFT_CA_BUNDLE = emulator.ca_path
    # As settings.py computes it for a loopback authority; tests of the real-tenant checks
    # turn it off.
    settings.USING_EMULATOR = True
    settings.GRAPH_CONNECT_TIMEOUT = 5
    settings.GRAPH_READ_TIMEOUT = 10
    settings.GRAPH_MAX_RETRIES = 3
    settings.GRAPH_MAX_IN_PROCESS_WAIT_SECONDS = 5
    settings.GRAPH_BACKOFF_BASE_SECONDS = 0.05
    settings.GRAPH_MAX_IN_FLIGHT_PER_MAILBOX = 4
    settings.GRAPH_MAILBOX_BUDGET_PER_10_MIN = 10_000
    settings.CREDENTIAL_RECHECK_SECONDS = 30
    return settings


@pytest.fixture
def mailbox(emulator: RunningEmulator) -> str:
    """The id of a seeded user with a mailbox."""
    return emulator.control.tenant()["users"][0]["id"]


def token_requests(emu: RunningEmulator, since: int = 0) -> list[dict[str, Any]]:
    return emu.control.requests_log(since=since, path=r"/oauth2/v2\.0/token$")


class _EchoHandler(BaseHTTPRequestHandler):
    """What the webhook receiver (a later issue) must do for Graph's validation handshake."""

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if urlsplit(self.path).path != "/api/webhooks/mail" or "validationToken" not in query:
            self.send_response(404)
            self.end_headers()
            return
        body = query["validationToken"][0].encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook_receiver() -> Iterator[str]:
    """A real local HTTP server that answers the validation handshake; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def q_sync() -> Iterator[None]:
    """Run django-q2 tasks inline (Conf.SYNC is frozen at import: stack-notes.md §2)."""

    previous = Conf.SYNC
    Conf.SYNC = True
    yield
    Conf.SYNC = previous
