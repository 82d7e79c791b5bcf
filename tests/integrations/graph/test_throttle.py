"""throttle.py: one gate, one budget and one shared window per mailbox, keyed by its Graph id."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.graph import throttle
from integrations.microsoft.models import MonitoredUser, SendBudget

pytestmark = pytest.mark.django_db

GRAPH_ID = "6e7b768e-07e2-4810-8459-485f84f8f204"


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.GRAPH_MAX_IN_FLIGHT_PER_MAILBOX = 4
    settings.GRAPH_MAILBOX_BUDGET_PER_10_MIN = 10_000
    throttle.reset_state()
    yield
    throttle.reset_state()


@pytest.fixture
def monitored() -> MonitoredUser:
    return MonitoredUser.objects.create(
        identifier="Maria.Kowalski@fleetdemo.example",
        upn="maria.kowalski@fleetdemo.example",
        graph_id=GRAPH_ID,
    )


class TestMailboxId:
    def test_a_monitored_users_upn_is_its_graph_id(self, monitored):
        assert throttle.mailbox_id("MARIA.KOWALSKI@fleetdemo.example") == GRAPH_ID
        assert throttle.mailbox_id(GRAPH_ID.upper()) == GRAPH_ID
        assert throttle.mailbox_key("maria.kowalski@fleetdemo.example") == throttle.mailbox_key(
            GRAPH_ID
        )

    def test_it_is_resolved_once_per_process(self, monitored, django_assert_num_queries):
        with django_assert_num_queries(1):
            for _ in range(3):
                assert throttle.mailbox_id("maria.kowalski@fleetdemo.example") == GRAPH_ID

    def test_an_unknown_upn_is_its_own_key(self, db):
        assert throttle.mailbox_id("Nobody@Example.com") == "nobody@example.com"
        assert throttle.mailbox_id("") == ""


def test_upn_and_id_share_one_gate(monitored):
    by_upn = throttle.gate(throttle.mailbox_id("maria.kowalski@fleetdemo.example"))
    assert by_upn is throttle.gate(throttle.mailbox_id(GRAPH_ID))
    by_upn.block_for(30)
    assert throttle.mailbox_blocked_for(GRAPH_ID) > 29
    assert throttle.mailbox_blocked_for("maria.kowalski@fleetdemo.example") > 29


class TestNextTurn:
    def test_the_budget_is_spent_one_request_at_a_time(self, settings):
        settings.GRAPH_MAILBOX_BUDGET_PER_10_MIN = 2
        assert throttle.next_turn("m1").wait == 0
        assert throttle.next_turn("m1").wait == 0
        third = throttle.next_turn("m1")
        assert third.reason == "budget" and 200 < third.wait <= 300
        assert throttle.next_turn("m2").wait == 0  # another mailbox has its own budget

    def test_a_window_another_process_shared_is_adopted(self):
        throttle.share_block(throttle.mailbox_key("m1"), 5)
        turn = throttle.next_turn("m1")
        assert turn.reason == "window" and 4 < turn.wait <= 5
        assert throttle.gate("m1").blocked_for() > 4  # now also in this process

    def test_extra_windows_count_without_a_mailbox(self):
        throttle.throttled("", ["teams-chat:19:abc"], 3)
        assert throttle.next_turn("", ["teams-chat:19:abc"]).wait > 2
        assert throttle.next_turn("", ["teams-chat:19:other"]).wait == 0


def test_a_shared_window_only_grows():
    key = throttle.mailbox_key("m1")
    throttle.share_block(key, 60)
    throttle.share_block(key, 5)
    assert throttle.blocked_for(key) > 55
    assert SendBudget.objects.filter(key=key).count() == 1


def test_send_slots_are_one_interval_apart_and_respect_windows():
    key = throttle.mailbox_key("m1")
    first = throttle.reserve_slot([(key, 2.0)])
    second = throttle.reserve_slot([(key, 2.0)])
    assert (second - first).total_seconds() == pytest.approx(2.0)
    throttle.share_block(key, 30)
    third = throttle.reserve_slot([(key, 2.0)])
    assert third >= timezone.now() + timedelta(seconds=29)
