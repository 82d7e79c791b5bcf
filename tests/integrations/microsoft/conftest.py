from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django_q.conf import Conf

from integrations.graph_emulator.pytest_plugin import emulator, graph_emulator  # noqa: F401
from integrations.graph_emulator.testing import RunningEmulator
from integrations.microsoft import inbox, teams_sender
from integrations.microsoft.models import MonitoredUser
from portal.access.actors import Actor
from tests.conftest import run_queued_jobs
from tests.integrations.graph.conftest import (  # noqa: F401  (the Graph client's fixtures)
    GateClock,
    _fresh_process_state,
    gate_clock,
    graph_settings,
    mailbox,
    reset_singletons,
    token_requests,
)


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


@pytest.fixture
def q_sync() -> Iterator[None]:
    """Run django-q2 tasks inline (django-q2's Conf.SYNC is frozen at import)."""

    previous = Conf.SYNC
    Conf.SYNC = True
    yield
    Conf.SYNC = previous


# ------------------------------------------------------------------ webhooks and sync


@pytest.fixture
def drain() -> Callable[..., list[str]]:
    """Drain the notification inbox and run what is on django-q2's ORM broker in this
    process, as the drain and a worker would, until nothing is left (notification → delta
    sync → continuation; lifecycle event → its job → a catch-up sync)."""

    def run_all(max_rounds: int = 20) -> list[str]:
        outcomes: list[str] = []
        for _ in range(max_rounds):
            drained = inbox.drain_pending()
            ran = run_queued_jobs(rounds=1)
            outcomes += ran
            if not ran and not drained.claimed and not drained.lifecycle:
                break
        return outcomes

    return run_all


@pytest.fixture
def webhook_settings(graph_settings: Any, live_server: Any, emulator: RunningEmulator) -> Any:
    """The portal's receiver is `live_server`; the emulator delivers fast."""
    graph_settings.PUBLIC_BASE_URL = live_server.url
    graph_settings.SYNC_SPREAD_SECONDS = 0
    emulator.control.allow_local_receivers()  # live_server is loopback http
    emulator.control.configure(
        delivery={
            "batch_delay_s": 0.05,
            "initial_backoff_s": 0.5,
            "max_backoff_s": 2.0,
            "timeout_s": 5.0,
            "tick_s": 0.02,
        }
    )
    return graph_settings


@pytest.fixture
def emulator_user(emulator: RunningEmulator) -> dict[str, Any]:
    """A seeded user that has a mailbox and at least one chat."""
    tenant = emulator.control.tenant()
    members = {m for chat in tenant["chats"] for m in chat["members"]}
    return next(
        u
        for u in tenant["users"]
        if u["id"] in members and not u["userPrincipalName"].startswith("fleet.bot")
    )


@pytest.fixture
def monitored(db: Any, emulator_user: dict[str, Any]) -> MonitoredUser:
    """A resolved monitored user (no Graph call: the ids come from the emulator's tenant)."""
    return MonitoredUser.objects.create(
        identifier=emulator_user["userPrincipalName"],
        graph_id=emulator_user["id"],
        upn=emulator_user["userPrincipalName"],
        display_name=emulator_user["displayName"],
    )


# ------------------------------------------------------------------ outbound messages


@pytest.fixture
def tenant(emulator) -> dict[str, Any]:
    return emulator.control.tenant()


@pytest.fixture
def people(tenant) -> tuple[str, str]:
    """(sender UPN, recipient UPN): two seeded people with mailboxes."""
    users = [u for u in tenant["users"] if not u["userPrincipalName"].startswith("fleet.bot")]
    return users[0]["userPrincipalName"], users[1]["userPrincipalName"]


@pytest.fixture
def bot(tenant, emulator) -> dict[str, Any]:
    return next(
        u for u in tenant["users"] if u["userPrincipalName"] == emulator.service_account_upn
    )


@pytest.fixture
def bot_chat(tenant, bot) -> str:
    return next(c["id"] for c in tenant["chats"] if bot["id"] in c["members"])


def connect_sender(emulator, user) -> None:
    """An admin connects the Teams sender account (the emulator signs the bot in)."""
    actor = Actor(kind="user", name=user.username, role="admin", user=user)
    redirect_uri = "http://127.0.0.1:8000/credentials/teams-sender/callback"
    emulator.control.set_redirect_uris(emulator.client_id, [redirect_uri])
    auth_url, flow = teams_sender.start_delegated_connect(
        redirect_uri, login_hint=emulator.service_account_upn, prompt=None
    )
    response = emulator.session().get(auth_url, allow_redirects=False, timeout=10)
    params = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
    teams_sender.complete_delegated_connect(actor, flow, params)


@pytest.fixture
def sender_connected(graph_settings, emulator, ada_admin) -> None:
    connect_sender(emulator, ada_admin)
