import random

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from portal.alerts.models import MetricSample
from portal.alerts.services import evaluate_all
from tests.conftest import PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_dashboard_shows_alerts_and_24_hour_charts(page, live_server, personas, sign_in,
                                                       screenshot):
    rng = random.Random(3)
    now = timezone.now()
    MetricSample.objects.bulk_create(
        MetricSample(taken_at=now - timezone.timedelta(minutes=10 * n),
                     queue_length=rng.randint(0, 60) + (200 if 40 < n < 60 else 0), dead=3,
                     calls_ok=rng.randint(20, 60), calls_failed=rng.randint(0, 6),
                     calls_throttled=rng.choice([0, 0, 0, 1, 4]))
        for n in range(144))
    evaluate_all()  # no worker heartbeat in this test: "No worker running" fires
    sign_in(PERSONAS["operator"])
    expect(page.get_by_role("alert").filter(has_text="firing")).to_contain_text("worker_down")
    expect(page.get_by_role("img", name="Graph calls per hour over the last 24 hours")
           ).to_be_visible()
    screenshot("dashboard-charts")
