"""Lifecycle events from the emulator, end to end: stored, handled, linked to their jobs."""

from __future__ import annotations

import pytest

from integrations.microsoft import subscriptions
from integrations.microsoft.models import LifecycleEvent, Subscription
from portal.access.actors import Actor
from portal.events.models import Event
from tests.integrations.microsoft.webhook_support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mail_sub(webhook_settings, monitored, drain):
    monitored.watch_chat_messages = False
    monitored.save()
    subscriptions.setup(Actor.system("test"))
    drain()
    return Subscription.objects.get(kind="messages", state="active")


def wait_event(name):
    return wait_for(lambda: LifecycleEvent.objects.filter(event=name).first())


def test_reauthorization_required_reauthorizes(mail_sub, emulator, drain):
    emulator.control.fire_lifecycle(mail_sub.graph_id, "reauthorizationRequired")
    event = wait_event("reauthorizationRequired")
    assert event.subscription == mail_sub and event.status == "received"
    drain()
    event.refresh_from_db()
    assert event.status == "handled" and event.outcome == "reauthorized"
    assert event.job.status == "succeeded" and event.followup_job is not None
    log = emulator.control.requests_log(path=f"/subscriptions/{mail_sub.graph_id}/reauthorize")
    assert [r["status"] for r in log] == [204]
    mail_sub.refresh_from_db()
    assert mail_sub.last_reauthorized_at is not None


def test_reauthorization_past_half_life_renews(mail_sub, emulator, drain):
    Subscription.objects.filter(pk=mail_sub.pk).update(
        lifetime_started_at=mail_sub.lifetime_started_at
        - (mail_sub.expiration - mail_sub.lifetime_started_at)
    )
    emulator.control.fire_lifecycle(mail_sub.graph_id, "reauthorizationRequired")
    event = wait_event("reauthorizationRequired")
    drain()
    event.refresh_from_db()
    assert event.outcome.startswith("renewed")
    mail_sub.refresh_from_db()
    assert mail_sub.last_renewed_at is not None


def test_subscription_removed_recreates_and_catches_up(mail_sub, emulator, drain):
    emulator.control.remove_subscription(mail_sub.graph_id)
    event = wait_event("subscriptionRemoved")
    drain()
    event.refresh_from_db()
    mail_sub.refresh_from_db()
    new = mail_sub.replaced_by
    assert mail_sub.state == "removed" and new is not None and new.state == "active"
    assert event.status == "handled" and new.graph_id in event.outcome
    assert [s["id"] for s in emulator.control.subscriptions()] == [new.graph_id]
    assert event.followup_job.status == "succeeded"
    assert event.followup_job.payload["trigger"] == "lifecycle:subscriptionRemoved"
    # Handling the same event again changes nothing.
    LifecycleEvent.objects.filter(pk=event.pk).update(status="received")
    subscriptions.handle_lifecycle_event(event.pk)
    assert Subscription.objects.filter(state="active").count() == 1
    # One lapse, however many paths noticed it (the event twice, then the schedule).
    subscriptions.maintain()
    lapsed = Event.objects.filter(type="subscription.lapsed")
    assert [e.data["subscription"] for e in lapsed] == [mail_sub.graph_id]


def test_missed_runs_a_delta_resync(mail_sub, emulator, drain):
    emulator.control.fire_lifecycle(mail_sub.graph_id, "missed")
    event = wait_event("missed")
    drain()
    event.refresh_from_db()
    assert event.status == "handled" and event.followup_job.status == "succeeded"
    assert event.followup_job.payload["trigger"] == "lifecycle:missed"


def test_a_lifecycle_event_for_a_subscription_graph_lost_recreates_it(mail_sub, emulator, drain):
    emulator.control.fire_lifecycle(mail_sub.graph_id, "reauthorizationRequired")
    event = wait_event("reauthorizationRequired")
    # Graph drops it before we handle the event: reauthorize gets 404 → recreate.
    emulator.control.remove_subscription(mail_sub.graph_id)
    drain()
    event.refresh_from_db()
    assert event.outcome.startswith("Graph no longer had it")
    assert Subscription.objects.filter(state="active").count() == 1


def test_subscription_removed_for_no_monitored_user_is_not_recreated(mail_sub, emulator, drain):
    # Its monitored user was deleted (the link is SET_NULL) while Graph still held it.
    Subscription.objects.filter(pk=mail_sub.pk).update(monitored_user=None)
    emulator.control.remove_subscription(mail_sub.graph_id)
    event = wait_event("subscriptionRemoved")
    drain()
    event.refresh_from_db()
    mail_sub.refresh_from_db()
    assert event.status == "handled" and "no monitored user" in event.outcome
    assert mail_sub.state == "removed" and mail_sub.replaced_by is None
    assert emulator.control.subscriptions() == []
