"""Fixtures of the Graph client's tests (the integration's tests use them too): a fresh
process state around every test, the emulator as the tenant, a movable gate clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from integrations import graph
from integrations.graph import auth, throttle
from integrations.graph_emulator.pytest_plugin import emulator, graph_emulator  # noqa: F401
from integrations.graph_emulator.testing import RunningEmulator


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


class GateClock:
    """The throttle gates' clock (time.monotonic, as throttle.py reads it), movable."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def gate_clock(monkeypatch: pytest.MonkeyPatch) -> GateClock:
    """`gate_clock.advance(s)`: a throttle window passes without waiting for it (only the
    throttle module's clock moves; move the wall clock with time-machine for shared windows)."""
    clock = GateClock()
    monkeypatch.setattr(throttle, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


@pytest.fixture
def mailbox(emulator: RunningEmulator) -> str:
    """The id of a seeded user with a mailbox."""
    return emulator.control.tenant()["users"][0]["id"]


def token_requests(emu: RunningEmulator, since: int = 0) -> list[dict[str, Any]]:
    return emu.control.requests_log(since=since, path=r"/oauth2/v2\.0/token$")
