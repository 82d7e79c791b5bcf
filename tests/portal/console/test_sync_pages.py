"""Users and sync pages (portal/console/sync_views.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.microsoft.models import (
    GraphCall,
    MonitoredUser,
    NotificationInbox,
    SyncRun,
    SyncState,
)
from portal.audit.models import AuditEvent
from portal.jobs.models import Job

pytestmark = pytest.mark.django_db

# The emulator and the settings that point the portal at it (bound so pytest finds them).


@pytest.fixture
def user(db):
    return MonitoredUser.objects.create(
        identifier="driver1@fleet.test",
        graph_id="g-1",
        upn="driver1@fleet.test",
        display_name="Driver One",
    )


@pytest.fixture
def state(user):
    now = timezone.now()
    return SyncState.objects.create(
        monitored_user=user,
        kind="messages",
        status="idle",
        delta_link="https://d/link",
        token_obtained_at=now - timedelta(days=2),
        last_success_at=now - timedelta(minutes=5),
        item_count=12,
        total_added=12,
    )


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def test_viewers_see_users_and_their_sync_state(client, vera_viewer, state):
    client.force_login(vera_viewer)
    response = client.get("/sync/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "driver1@fleet.test" in body and "last success" in body
    assert "Add a monitored user" not in body
    partial = client.get("/sync/", {"q": "driver"}, headers={"HX-Request": "true"})
    assert partial.content.decode().lstrip().startswith('<section id="users"')
    assert client.get("/sync/", {"status": "bogus"}).context["form"].errors


def test_the_user_page_has_a_card_per_resource_with_token_age(client, vera_viewer, state):
    SyncRun.objects.create(state=state, kind="delta", outcome="succeeded", pages=2, added=3)
    client.force_login(vera_viewer)
    response = client.get(f"/sync/users/{state.monitored_user_id}/")
    cards = {c["kind"]: c for c in response.context["cards"]}
    assert set(cards) == {"messages", "chatMessages"}
    assert cards["messages"]["token_days_left"] == 5
    body = response.content.decode()
    assert "+3" in body and "Delta sync now" not in body  # viewers have no actions
    assert "Sign out" in body  # the page keeps the signed-in chrome (context not shadowed)
    assert client.get("/sync/users/999/").status_code == 404


def test_support_runs_a_delta_but_not_a_full_sync_or_reset(client, sam_support, state):
    client.force_login(sam_support)
    url = f"/sync/users/{state.monitored_user_id}/action"
    response = client.post(url, {"kind": "messages", "action": "delta"}, follow=True)
    assert any("Delta sync of" in m for m in messages_of(response))
    assert Job.objects.filter(job_type="graph.sync_delta").count() == 1
    assert client.post(url, {"kind": "messages", "action": "full"}).status_code == 403
    assert client.post(url, {"kind": "messages", "action": "reset"}).status_code == 403
    assert AuditEvent.objects.filter(action="sync.reset", outcome="denied").exists()
    state.refresh_from_db()
    assert state.delta_link


def test_an_operator_resets_the_state(client, otto_operator, state):
    client.force_login(otto_operator)
    response = client.post(
        f"/sync/users/{state.monitored_user_id}/action",
        {"kind": "messages", "action": "reset"},
        follow=True,
    )
    assert any("reset" in m for m in messages_of(response))
    state.refresh_from_db()
    assert state.delta_link == "" and state.reset_requested
    assert AuditEvent.objects.get(action="sync.reset").actor_name == "otto-operator"


@pytest.mark.parametrize(
    "data", [{}, {"kind": "calendar", "action": "delta"}, {"kind": "messages", "action": "explode"}]
)
def test_bad_actions_are_messages(client, otto_operator, state, data):
    client.force_login(otto_operator)
    response = client.post(f"/sync/users/{state.monitored_user_id}/action", data, follow=True)
    assert response.status_code == 200
    assert any("Choose" in m for m in messages_of(response))


def test_add_by_upn_resolves_it_in_graph(client, otto_operator, graph_settings, emulator):
    upn = emulator.control.tenant()["users"][0]["userPrincipalName"]
    client.force_login(otto_operator)
    response = client.post("/sync/users/add", {"identifier": upn, "messages": "on"}, follow=True)
    user = MonitoredUser.objects.get(identifier=upn)
    assert user.graph_id and user.kinds == ["messages"]
    assert response.context["monitored"] == user
    response = client.post(
        "/sync/users/add", {"identifier": "nobody@nowhere.test", "messages": "on"}, follow=True
    )
    assert any("does not know" in m for m in messages_of(response))
    response = client.post("/sync/users/add", {"identifier": "x@y.test"}, follow=True)
    assert any("at least one" in m for m in messages_of(response))


def test_remove_asks_first(client, otto_operator, sam_support, user):
    client.force_login(sam_support)
    assert client.post(f"/sync/users/{user.pk}/remove").status_code == 403
    client.force_login(otto_operator)
    page = client.get(f"/sync/users/{user.pk}/remove")
    assert "Stop monitoring" in page.content.decode()
    user.refresh_from_db()
    assert user.is_active
    client.post(f"/sync/users/{user.pk}/remove")
    user.refresh_from_db()
    assert not user.is_active
    assert AuditEvent.objects.filter(action="monitored_user.remove").exists()


def test_the_timeline_merges_runs_notifications_429s_and_actions(client, otto_operator, state):
    user = state.monitored_user
    SyncRun.objects.create(state=state, kind="delta", outcome="failed", error="boom 503")
    NotificationInbox.objects.create(
        dedupe_key="d1",
        batch="b",
        subscription_graph_id="s",
        monitored_user=user,
        kind="messages",
        change_type="created",
        resource="r",
    )
    GraphCall.objects.create(
        method="GET",
        route="/users/{id}/messages",
        status=429,
        throttled=True,
        mailbox="g-1",
        retry_after=10,
    )
    client.force_login(otto_operator)
    client.post(f"/sync/users/{user.pk}/action", {"kind": "messages", "action": "reset"})
    response = client.get(f"/sync/users/{user.pk}/timeline")
    categories = [e.category for e in response.context["entries"]]
    assert {"sync run", "notification", "429", "operator"} <= set(categories)
    times = [e.at for e in response.context["entries"]]
    assert times == sorted(times, reverse=True)
    diagnosis = " ".join(text for _, text in response.context["diagnosis"])
    assert "No live messages subscription" in diagnosis
    assert client.get(f"/sync/users/{user.pk}/timeline", {"window": "1y"}).status_code == 200
