"""Past a threshold of monitored users, one tenant-wide /chats/getAllMessages subscription
watches every chat (Teams allows 10,000 subscriptions per organisation across all apps), and
its notifications reach only the monitored members' syncs. Against the emulator over HTTPS."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from integrations.microsoft import subscriptions
from integrations.microsoft.models import (
    MonitoredUser,
    NotificationInbox,
    Subscription,
    SyncedItem,
    TeamsChat,
)
from portal.access.actors import Actor
from portal.jobs.models import Job

from .webhook_support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TENANT = Subscription.TENANT_CHATS_RESOURCE


def monitor(users: list[dict[str, Any]]) -> list[MonitoredUser]:
    return [
        MonitoredUser.objects.create(
            identifier=u["userPrincipalName"],
            graph_id=u["id"],
            upn=u["userPrincipalName"],
            display_name=u["displayName"],
        )
        for u in users
    ]


def chat_people(tenant: dict[str, Any]) -> list[dict[str, Any]]:
    members = {m for chat in tenant["chats"] for m in chat["members"]}
    return [
        u
        for u in tenant["users"]
        if u["id"] in members and not u["userPrincipalName"].startswith("fleet.bot")
    ]


def graph_teams_resources(emulator) -> list[str]:
    return sorted(
        s["resource"] for s in emulator.control.subscriptions() if "chats" in s["resource"]
    )


def live(kind: str = "chatMessages") -> list[Subscription]:
    return list(Subscription.objects.filter(state="active", kind=kind))


def test_the_threshold_switches_chats_to_one_tenant_wide_subscription_and_back(
    webhook_settings, emulator, drain
):
    users = monitor(chat_people(emulator.control.tenant())[:3])
    webhook_settings.TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD = 3
    summary = subscriptions.setup(Actor.system("test"))
    assert not summary.failed, summary.failed
    assert graph_teams_resources(emulator) == [TENANT]
    (tenant_sub,) = live()
    assert tenant_sub.tenant_wide and tenant_sub.monitored_user is None
    assert len(live("messages")) == 3  # mail stays per user

    # One user fewer: below the threshold, per-user chat subscriptions come back and the
    # tenant-wide one goes (after them: no moment without either).
    MonitoredUser.objects.filter(pk=users[0].pk).update(is_active=False)
    summary = subscriptions.maintain()
    assert not summary.failed, summary.failed
    assert graph_teams_resources(emulator) == sorted(
        f"users/{u.graph_id}/chats/getAllMessages" for u in users[1:]
    )
    assert {s.monitored_user_id for s in live()} == {u.pk for u in users[1:]}
    assert not Subscription.objects.filter(pk=tenant_sub.pk).exists()
    drain()  # the new per-user subscriptions' catch-up syncs

    # The threshold lowered: the tenant-wide one again, created before the per-user ones go.
    webhook_settings.TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD = 2
    summary = subscriptions.maintain()
    assert not summary.failed, summary.failed
    assert graph_teams_resources(emulator) == [TENANT]
    assert [s.tenant_wide for s in live()] == [True]
    order = [
        (r["method"], r["path"])
        for r in emulator.control.requests_log(path=r"/subscriptions")
        if r["method"] in ("POST", "DELETE")
    ][-3:]
    assert order[0][0] == "POST" and [m for m, _ in order[1:]] == ["DELETE", "DELETE"]


def test_tenant_wide_notifications_sync_the_monitored_members_and_drop_the_rest(
    webhook_settings, emulator, drain
):
    tenant = emulator.control.tenant()
    (user,) = monitor(chat_people(tenant)[:1])
    webhook_settings.TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD = 1
    assert not subscriptions.setup(Actor.system("test")).failed
    drain()
    theirs = next(c for c in tenant["chats"] if user.graph_id in c["members"])
    others = next(c for c in tenant["chats"] if user.graph_id not in c["members"])

    mine = emulator.control.create_chat_message("Trailer 12 is loaded", chat_id=theirs["id"])
    not_mine = emulator.control.create_chat_message("Nobody monitored here", chat_id=others["id"])
    wait_for(lambda: NotificationInbox.objects.count() >= 2)
    drain()
    # The first notification of each chat asked Graph for its members once.
    assert TeamsChat.objects.get(chat_id=theirs["id"]).monitored_user_ids == [user.pk]
    assert TeamsChat.objects.get(chat_id=others["id"]).monitored_user_ids == []
    assert SyncedItem.objects.filter(monitored_user=user, graph_id=mine["id"]).exists()
    assert not SyncedItem.objects.filter(graph_id=not_mine["id"]).exists()

    # Chats known now: their notifications go straight to the members' syncs, or are dropped.
    again = emulator.control.create_chat_message("Leaving now", chat_id=theirs["id"])
    dropped = emulator.control.create_chat_message("Still nobody", chat_id=others["id"])
    wait_for(lambda: NotificationInbox.objects.count() >= 4)
    members_jobs = Job.objects.filter(job_type="graph.chat_members").count()
    drain()
    assert Job.objects.filter(job_type="graph.chat_members").count() == members_jobs
    assert SyncedItem.objects.filter(monitored_user=user, graph_id=again["id"]).exists()
    row = NotificationInbox.objects.get(resource_id=dropped["id"])
    assert row.status == NotificationInbox.Status.IGNORED
    kept = NotificationInbox.objects.get(resource_id=again["id"])
    assert kept.status == NotificationInbox.Status.PROCESSED and kept.sync_job is not None


def test_the_console_says_how_chats_are_watched(webhook_settings, emulator, client, ada_admin):
    monitor(chat_people(emulator.control.tenant())[:2])
    webhook_settings.TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD = 2
    subscriptions.setup(Actor.system("test"))
    client.force_login(ada_admin)
    page = client.get(reverse("console:subscriptions")).content.decode()
    assert "one subscription for the whole tenant" in page
    assert "Whole tenant" in page
    webhook_settings.TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD = 3
    page = client.get(reverse("console:subscriptions")).content.decode()
    assert "one subscription per user" in page
