"""ports.py: the Graph client runs on whatever implements its ports — here, stores kept in
memory instead of the integration's tables — and says what is missing when nothing is."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import pytest

from integrations import graph
from integrations.graph import auth, ports
from integrations.graph.errors import Throttled, TokenError
from integrations.microsoft.models import GraphCall, SendBudget

pytestmark = pytest.mark.django_db


class MemoryCredentials:
    def __init__(self, secret: str) -> None:
        self.secret = secret

    def active(self) -> ports.StoredCredential:
        return ports.StoredCredential(7, "memory", "secret", auth.secret_credential(self.secret))


class MemoryCallLog:
    def __init__(self) -> None:
        self.calls: list[ports.GraphCallRecord] = []

    def record(self, calls: Sequence[ports.GraphCallRecord]) -> None:
        self.calls.extend(calls)


class MemoryLimits:
    def __init__(self) -> None:
        self.blocks: dict[str, datetime] = {}
        self.leases: dict[int, str] = {}

    def graph_id_of(self, upn: str) -> str:
        return ""

    def extend_block(self, key: str, until: datetime) -> None:
        self.blocks[key] = max(until, self.blocks.get(key, until))

    def blocked_until(self, key: str) -> datetime | None:
        return self.blocks.get(key)

    def in_transaction(self) -> bool:
        return False

    def take_lease(
        self, key: str, *, limit: int, now: datetime, expires_at: datetime
    ) -> int | None:
        if sum(1 for held in self.leases.values() if held == key) >= limit:
            return None
        lease = len(self.leases) + 1
        self.leases[lease] = key
        return lease

    def release_lease(self, lease_id: int) -> None:
        self.leases.pop(lease_id, None)

    def reserve_slot(
        self, keys: Sequence[tuple[str, float]], *, now: datetime, not_before: datetime
    ) -> datetime:
        return max([not_before, *(self.blocks.get(key, now) for key, _ in keys)])


def _no_delegated_token(*, force_refresh: bool = False) -> str:
    raise TokenError("No delegated account here.", error="no_delegated_account")


@pytest.fixture
def memory_ports(graph_settings, monkeypatch) -> Iterator[tuple[MemoryCallLog, MemoryLimits]]:
    # The portal's token-health observer keeps outcomes per stored credential: not here.
    monkeypatch.setattr(ports, "_token_observers", [])
    registered = ports._registered
    saved = (
        registered.credential_store,
        registered.call_log,
        registered.shared_limits,
        registered.delegated_token,
    )
    call_log, limits = MemoryCallLog(), MemoryLimits()
    ports.register(
        credential_store=MemoryCredentials(graph_settings.MICROSOFT_CLIENT_SECRET),
        call_log=call_log,
        shared_limits=limits,
        delegated_token=_no_delegated_token,
    )
    yield call_log, limits
    (
        registered.credential_store,
        registered.call_log,
        registered.shared_limits,
        registered.delegated_token,
    ) = saved


def test_the_client_runs_on_any_implementation_of_its_ports(memory_ports, emulator, mailbox):
    call_log, limits = memory_ports
    graph.get(f"/users/{mailbox}/mailFolders/inbox/messages", params={"$top": "1"})
    assert [(c.method, c.route, c.status) for c in call_log.calls] == [
        ("GET", "/users/{id}/mailFolders/{id}/messages", 200)
    ]
    assert limits.leases == {}  # the in-flight lease was taken and given back
    # Nothing reached the integration's tables.
    assert not GraphCall.objects.exists() and not SendBudget.objects.exists()


def test_a_shared_window_in_the_store_holds_every_request(memory_ports, emulator, mailbox):
    _, limits = memory_ports
    limits.extend_block(
        f"graph-mailbox:{mailbox.lower()}", datetime.now().astimezone() + timedelta(minutes=5)
    )
    with pytest.raises(Throttled) as caught:
        graph.get(f"/users/{mailbox}/mailFolders/inbox/messages")
    assert caught.value.code == "LocalThrottle"
    assert emulator.control.requests_log(path=f"/v1.0/users/{mailbox}/") == []


def test_without_a_registered_store_the_error_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(ports, "_registered", ports._Registered())
    with pytest.raises(RuntimeError, match="no credential store: register one at start-up"):
        auth.app_token()
