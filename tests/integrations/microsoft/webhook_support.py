"""Helpers for the webhook, lifecycle and sync tests (their fixtures — drain,
emulator_user, monitored, webhook_settings — are in tests/integrations/microsoft/conftest.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from integrations.microsoft.models import MonitoredUser, Subscription
from portal.lib.crypto import encrypt

__all__ = ["make_sub", "notification", "post_json", "wait_for"]


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
