"""Shared fixtures and helpers for the webhook, lifecycle and sync tests.

Import the fixtures into a test module:
`from tests.integrations.microsoft.webhook_support import *  # noqa: F403`
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from integrations.graph_emulator.testing import RunningEmulator
from integrations.microsoft import inbox
from integrations.microsoft.crypto import encrypt
from integrations.microsoft.models import MonitoredUser, Subscription
from tests.conftest import run_queued_jobs

__all__ = [
    "drain",
    "emulator_user",
    "make_sub",
    "monitored",
    "notification",
    "post_json",
    "wait_for",
    "webhook_settings",
]


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


def make_sub(
    user: MonitoredUser | None,
    *,
    kind: str = "messages",
    graph_id: str,
    client_state: str = "s3cret-client-state",
    **fields: Any,
) -> Subscription:
    return Subscription.objects.create(
        monitored_user=user,
        kind=kind,
        graph_id=graph_id,
        resource="users/x/messages",
        change_types="created,updated,deleted",
        notification_url="http://t/api/webhooks/mail",
        client_state_encrypted=encrypt(client_state),
        state=Subscription.State.ACTIVE,
        **fields,
    )


def notification(
    sub_id: str,
    client_state: str,
    *,
    message_id: str = "AAMk1",
    change: str = "created",
    etag: str | None = 'W/"1"',
) -> dict[str, Any]:
    resource = f"Users/u1/Messages/{message_id}"
    return {
        "subscriptionId": sub_id,
        "clientState": client_state,
        "changeType": change,
        "resource": resource,
        "tenantId": "t",
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Message",
            "@odata.id": resource,
            "@odata.etag": etag,
            "id": message_id,
        },
    }


def post_json(client: Any, url: str, body: Any, **extra: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(url, data=data, content_type="application/json", **extra)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
