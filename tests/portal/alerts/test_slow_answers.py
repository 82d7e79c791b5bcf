"""Graph's rule for slow endpoints as a figure: the share of notification requests answered
slower than NOTIFICATION_SLOW_ANSWER_SECONDS in the last 10 minutes, on /metrics, the
dashboard and the notification_answers_slow alert (one definition:
NotificationAnswers.objects.figures)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from integrations.microsoft import notifications
from integrations.microsoft.models import NotificationAnswers
from portal.alerts import services
from portal.alerts.models import Alert
from portal.alerts.rules import MIN_ANSWERS_FOR_SLOW_SHARE

pytestmark = pytest.mark.django_db

RULE = "notification_answers_slow"


def answer(client, times: int) -> None:
    for _ in range(times):
        # Not a notification Graph would send: answered 400, and answered all the same.
        response = client.post("/api/webhooks/mail", data=b"{}", content_type="application/json")
        assert response.status_code == 400
    # Each web process writes its counts at most once a second, with a later request: the
    # test writes them at once.
    notifications.flush_answers()


def state() -> str:
    services.evaluate_all()
    return Alert.objects.get(rule=RULE).state


def test_answers_are_counted_per_minute_and_fast_ones_raise_nothing(client, settings):
    settings.NOTIFICATION_SLOW_ANSWER_SECONDS = 60
    answer(client, MIN_ANSWERS_FOR_SLOW_SHARE)
    client.get("/api/webhooks/mail", {"validationToken": "x"})  # the handshake is not counted
    figures = NotificationAnswers.objects.figures()
    assert (figures.answered, figures.slow, figures.slow_percent) == (20, 0, 0.0)
    assert state() == "ok"
    metrics = client.get("/metrics").content.decode()
    assert "fleet_notification_answers_last_ten_minutes 20.0" in metrics
    assert "fleet_notification_answers_slow_last_ten_minutes 0.0" in metrics


def test_slow_answers_fire_show_on_the_dashboard_and_clear_when_the_window_passes(
    client, settings, otto_operator
):
    settings.NOTIFICATION_SLOW_ANSWER_SECONDS = 0  # every answer counts as slow
    answer(client, MIN_ANSWERS_FOR_SLOW_SHARE)
    assert NotificationAnswers.objects.figures().slow == MIN_ANSWERS_FOR_SLOW_SHARE
    assert state() == "firing"
    alert = Alert.objects.get(rule=RULE)
    assert alert.value == 100.0 and alert.threshold == 5
    assert (
        "fleet_notification_answers_slow_last_ten_minutes 20.0"
        in client.get("/metrics").content.decode()
    )
    client.force_login(otto_operator)
    tiles = {t["name"]: t for t in client.get(reverse("console:dashboard")).context["health"]}
    assert tiles["Receiver"]["state"] == "bad"
    assert tiles["Receiver"]["text"] == "100.0 % of 20 answers slow (10 min)"
    # Ten minutes later those answers are out of Graph's window, and out of ours.
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        assert NotificationAnswers.objects.figures().answered == 0
        assert state() == "ok"


def test_a_few_slow_answers_are_not_enough_to_page(client, settings):
    settings.NOTIFICATION_SLOW_ANSWER_SECONDS = 0
    answer(client, MIN_ANSWERS_FOR_SLOW_SHARE - 1)
    assert state() == "ok"
