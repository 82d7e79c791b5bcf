"""Subscription services: renewal at half-life with time travel, recreation, roles, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from integrations.graph import kinds
from integrations.microsoft import monitored_users, subscriptions
from integrations.microsoft.models import MonitoredUser, Subscription
from portal.access.actors import Actor
from portal.audit.models import AuditEvent
from portal.events.models import Event
from portal.jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def subscribed(webhook_settings, monitored, drain):
    subscriptions.setup(Actor.system("test"))
    drain()
    return {s.kind: s for s in Subscription.objects.filter(state="active")}


def remote_expirations(emulator):
    return {
        s["id"]: kinds.parse_graph_datetime(s["expirationDateTime"])
        for s in emulator.control.subscriptions()
    }


def test_lifetimes_respect_graph_maxima():
    assert kinds.KINDS["messages"].lifetime_minutes <= 10_000
    assert kinds.KINDS["chatMessages"].lifetime_minutes <= 4_320


def test_the_schedule_renews_each_subscription_past_half_life(subscribed, emulator):
    teams, mail = subscribed["chatMessages"], subscribed["messages"]
    assert teams.expiration - timezone.now() > timedelta(minutes=4_000)
    assert subscriptions.maintain().counts()["renewed"] == 0
    # Past half of the Teams lifetime (2,100 of 4,200 min), not of the mail one.
    minutes = 2_110
    emulator.control.advance_clock(minutes * 60)
    with time_machine.travel(timezone.now() + timedelta(minutes=minutes), tick=True):
        summary = subscriptions.maintain()
        assert summary.renewed == [
            subscriptions._label(teams.monitored_user, "chatMessages", teams.graph_id)
        ]
        teams.refresh_from_db()
        assert teams.expiration > timezone.now() + timedelta(minutes=4_000)
        assert remote_expirations(emulator)[teams.graph_id] == teams.expiration
    # Later, past half of the mail lifetime too; the Teams one is due again by then.
    minutes += 3_000
    emulator.control.advance_clock(3_000 * 60)
    with time_machine.travel(timezone.now() + timedelta(minutes=minutes), tick=True):
        summary = subscriptions.maintain()
        assert len(summary.renewed) == 2 and not summary.failed
        mail.refresh_from_db()
        assert mail.expiration > timezone.now() + timedelta(minutes=9_000)
    assert len(emulator.control.subscriptions()) == 2
    assert AuditEvent.objects.filter(action="webhooks.maintain").count() == 2


def test_the_schedule_recreates_one_that_expired_in_graph(subscribed, emulator, drain):
    teams = subscribed["chatMessages"]
    minutes = 4_300  # past the Teams expiry: Graph deletes it
    emulator.control.advance_clock(minutes * 60)
    with time_machine.travel(timezone.now() + timedelta(minutes=minutes), tick=True):
        emulator.control.subscriptions()  # let the emulator purge it
        summary = subscriptions.maintain()
    assert len(summary.recreated) == 1 and len(summary.unchanged) == 1  # mail: not due yet
    teams.refresh_from_db()
    assert teams.state == "removed" and teams.replaced_by.state == "active"
    catch_up = Job.objects.filter(
        job_type="graph.sync_delta", payload__trigger="subscription:vanished"
    )
    assert catch_up.exists()


def lapsed_events():
    return list(Event.objects.filter(type="subscription.lapsed").order_by("id"))


def test_a_subscription_that_expires_unrenewed_lapses_exactly_once(subscribed, emulator):
    teams = subscribed["chatMessages"]
    minutes = 4_300  # past the Teams expiry, and no renewal happened (the worker was down)
    emulator.control.advance_clock(minutes * 60)
    with time_machine.travel(timezone.now() + timedelta(minutes=minutes), tick=True):
        emulator.control.subscriptions()  # let the emulator purge it
        # Graph cannot even be listed: the schedule still notices the expiry.
        emulator.control.inject_fault(path="/subscriptions", kind="status", status=400, count=1)
        with pytest.raises(Exception):  # noqa: B017  (the job layer classifies it)
            subscriptions.maintain()
        (event,) = lapsed_events()
        assert event.data["subscription"] == teams.graph_id
        assert event.data["resourceType"] == "chatMessages"
        assert event.data["reason"].startswith("Expired at ")
        assert event.data["user"]["id"] == teams.monitored_user.graph_id
        teams.refresh_from_db()
        assert teams.state == "removed"
        # The next runs recreate it, and cleanup forgets the old row: no second event.
        summary = subscriptions.maintain()
        assert len(summary.recreated) == 1
        subscriptions.maintain()
        subscriptions.cleanup(Actor.system("test"))
    assert len(lapsed_events()) == 1


def test_cleanup_of_an_expired_active_row_lapses_it_once(subscribed, emulator):
    mail = subscribed["messages"]
    Subscription.objects.filter(pk=mail.pk).update(expiration=timezone.now() - timedelta(minutes=1))
    subscriptions.cleanup(Actor.system("test"), dry_run=True)
    assert lapsed_events() == []
    subscriptions.cleanup(Actor.system("test"))
    assert [e.data["subscription"] for e in lapsed_events()] == [mail.graph_id]
    assert not Subscription.objects.filter(pk=mail.pk).exists()


def test_the_schedule_enqueues_one_maintenance_job_per_slot(db):
    first = subscriptions.enqueue_maintenance()
    assert subscriptions.enqueue_maintenance() == first


class TestOperatorActions:
    def test_renew_recreate_delete_need_operator_and_are_audited(
        self, subscribed, emulator, sam_support, otto_operator
    ):
        support = Actor(kind="user", name="sam", role="support", user=sam_support)
        operator = Actor(kind="user", name="otto", role="operator", user=otto_operator)
        mail = subscribed["messages"]
        for func in (subscriptions.renew, subscriptions.recreate, subscriptions.delete):
            with pytest.raises(PermissionDenied):
                func(support, mail.pk)
        subscriptions.renew(operator, mail.pk)
        new = subscriptions.recreate(operator, mail.pk)
        assert new.graph_id != mail.graph_id
        assert mail.graph_id not in {s["id"] for s in emulator.control.subscriptions()}
        subscriptions.delete(operator, new.pk)
        assert new.graph_id not in {s["id"] for s in emulator.control.subscriptions()}
        actions = list(
            AuditEvent.objects.filter(actor_name="otto").values_list("action", flat=True)
        )
        assert sorted(actions) == [
            "subscription.delete",
            "subscription.recreate",
            "subscription.renew",
        ]

    def test_setup_needs_setup_subscriptions(self, webhook_settings, sam_support, monitored):
        with pytest.raises(PermissionDenied):
            subscriptions.setup(Actor(kind="user", name="sam", role="support", user=sam_support))
        assert AuditEvent.objects.get(action="webhooks.setup").outcome == "denied"

    def test_monitored_users_are_resolved_by_upn(
        self, webhook_settings, emulator_user, otto_operator
    ):
        operator = Actor(kind="user", name="otto", role="operator", user=otto_operator)
        user = monitored_users.add_monitored_user(
            operator, emulator_user["userPrincipalName"], chat_messages=False
        )
        assert user.graph_id == emulator_user["id"] and user.kinds == ["messages"]
        with pytest.raises(ValueError, match="does not know"):
            monitored_users.add_monitored_user(operator, "nobody@fleetdemo.onmicrosoft.com")
        assert MonitoredUser.objects.get(identifier="nobody@fleetdemo.onmicrosoft.com").last_error
        assert AuditEvent.objects.filter(action="monitored_user.add").count() == 2

    def test_unwatched_kinds_are_deleted_by_setup(self, subscribed, emulator, monitored):
        MonitoredUser.objects.filter(pk=monitored.pk).update(watch_chat_messages=False)
        summary = subscriptions.setup(Actor.system("test"))
        assert len(summary.deleted) == 1 and len(summary.unchanged) == 1
        assert {s["resource"] for s in emulator.control.subscriptions()} == {
            subscribed["messages"].resource
        }
