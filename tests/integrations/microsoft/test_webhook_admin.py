"""The webhook and sync admin pages open, hide secrets, and their actions are role-checked."""

from __future__ import annotations

import pytest
from django.urls import reverse

from integrations.microsoft.models import MonitoredUser, SyncState
from tests.integrations.microsoft.webhook_support import make_sub

pytestmark = pytest.mark.django_db
MODELS = [
    "monitoreduser",
    "subscription",
    "lifecycleevent",
    "notificationinbox",
    "webhookrejection",
    "syncstate",
    "syncrun",
    "synceditem",
]


@pytest.mark.parametrize("model", MODELS)
def test_changelists_open_for_admins(client, ada_admin, model):
    user = MonitoredUser.objects.create(identifier="u@x", graph_id="u1")
    make_sub(user, graph_id="sub-1", client_state="never-shown")
    SyncState.objects.create(monitored_user=user, kind="messages")
    client.force_login(ada_admin)
    response = client.get(reverse(f"admin:microsoft_{model}_changelist"))
    assert response.status_code == 200
    assert b"never-shown" not in response.content


def test_subscription_detail_hides_the_client_state(client, ada_admin):
    sub = make_sub(
        MonitoredUser.objects.create(identifier="u@x", graph_id="u1"),
        graph_id="sub-1",
        client_state="never-shown",
    )
    client.force_login(ada_admin)
    response = client.get(reverse("admin:microsoft_subscription_change", args=[sub.pk]))
    assert response.status_code == 200
    assert b"client_state" not in response.content and b"never-shown" not in response.content


def test_monitored_user_add_form_opens(client, ada_admin):
    client.force_login(ada_admin)
    assert client.get(reverse("admin:microsoft_monitoreduser_add")).status_code == 200
