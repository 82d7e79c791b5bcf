"""The dashboard's charts at a laptop's and a phone's width, light and dark: the range choice
swaps the charts in place and is kept in the address bar, the time labels end with "now", and an
operator's action is a marker that leads (by mouse or keyboard) to its row in the audit log."""

from __future__ import annotations

import random
import re
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect

from portal.access.actors import Actor
from portal.alerts.models import MetricSample
from portal.audit.services import record
from portal.jobs.runner import beat
from tests.browser.conftest import low_contrast_texts
from tests.browser.test_console_layout import LAPTOP, PHONE, assert_no_sideways_scroll
from tests.conftest import PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def a_week_with_an_incident() -> int:
    """A week of samples (minute rows for the last day, 10-minute rows before), an incident
    of 429s and a growing queue 90 to 40 minutes ago, and the operator who paused the queue
    45 minutes ago. Returns that audit record's id."""
    rng = random.Random(7)
    now = timezone.now()
    rows = []
    for minute in range(24 * 60):
        incident = 40 <= minute <= 90
        rows.append(
            MetricSample(
                taken_at=now - timedelta(minutes=minute, seconds=10),
                queue_length=rng.randint(0, 8) + (300 - 3 * abs(minute - 60) if incident else 0),
                dead=0,
                calls_ok=rng.randint(20, 40),
                calls_failed=rng.randint(0, 2) + (6 if incident else 0),
                calls_throttled=rng.randint(8, 20) if incident else 0,
            )
        )
    start = now - timedelta(days=7)
    for span in range(6 * 24 * 6):
        rows.append(
            MetricSample(
                taken_at=start + timedelta(minutes=10 * span),
                span_minutes=10,
                queue_length=rng.randint(0, 12),
                dead=0,
                calls_ok=rng.randint(200, 400),
                calls_failed=rng.randint(0, 10),
                calls_throttled=0,
            )
        )
    MetricSample.objects.bulk_create(rows)
    otto = get_user_model().objects.get(username=PERSONAS["operator"])
    with time_machine.travel(now - timedelta(minutes=45)):
        event = record(
            "jobs.pause",
            actor=Actor(kind="user", name=otto.username, role="operator", user=otto),
            target_type="job_queue",
        )
    beat()  # a worker is alive: no alert banner to push the charts down
    return event.pk


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["1280", "390"])
def test_the_charts_choose_a_range_and_lead_from_an_action_to_its_audit_row(
    viewport, page, live_server, personas, sign_in, screenshot
):
    action = a_week_with_an_incident()
    page.set_viewport_size(viewport)
    sign_in(PERSONAS["operator"])
    charts = page.locator("#charts")
    expect(charts.get_by_role("heading")).to_contain_text("the last 6 hours")
    expect(charts.locator("svg.timechart")).to_have_count(3)
    # The time labels are the viewer's clock (UTC here), "now" at the right end.
    expect(charts.locator("#chart-calls .ticks text").last).to_have_text("now")
    labels = charts.locator("#chart-calls .ticks text").all_text_contents()
    assert all(re.fullmatch(r"\d\d:\d\d|\w{3} \d{1,2}|now", label) for label in labels), labels
    marker = charts.locator(f"#marker-{action}")
    expect(marker).to_have_attribute(
        "aria-label", re.compile(r"otto-operator .*paused the job queue")
    )
    assert_no_sideways_scroll(page)
    width = viewport["width"]
    screenshot(f"dashboard-charts-6h-{width}")

    # The range choice: a link htmx follows in place, kept in the address bar.
    charts.get_by_role("link", name="1 h", exact=True).click()
    expect(page).to_have_url(re.compile(r"/\?range=1h$"))
    expect(charts.get_by_role("heading")).to_contain_text("the last hour")
    expect(page.get_by_role("heading", name="Dashboard")).to_have_count(1)  # not a page in a page
    expect(charts.locator("#range-1h")).to_have_attribute("aria-current", "true")
    # The live refresh too (with the stamp of the charts it shows).
    expect(page.locator("#health")).to_have_attribute("hx-get", re.compile(r"^/\?range=1h&drawn="))
    assert_no_sideways_scroll(page)
    assert low_contrast_texts(page) == []
    screenshot(f"dashboard-charts-1h-{width}")

    page.emulate_media(color_scheme="dark")
    charts.get_by_role("link", name="7 d", exact=True).click()
    expect(page).to_have_url(re.compile(r"/\?range=7d$"))
    ticks = charts.locator("#chart-calls .ticks text")
    expect(ticks.first).to_have_text(re.compile(r"^\w{3} \d{1,2}$"))  # a midnight: "Tue 1"
    assert 7 <= ticks.count() <= 8  # 6 or 7 midnights (one close to now gives way) and now
    assert_no_sideways_scroll(page)
    assert low_contrast_texts(page) == []
    screenshot(f"dashboard-charts-7d-dark-{width}")
    page.emulate_media(color_scheme="light")

    # By keyboard: the marker takes focus and Enter opens the audit log at its row.
    charts.get_by_role("link", name="1 h", exact=True).click()
    expect(page).to_have_url(re.compile(r"/\?range=1h$"))
    marker.focus()
    assert page.evaluate("document.activeElement.id") == f"marker-{action}"
    # The live refresh swaps the charts under the keyboard's focus: it stays on the marker.
    with page.expect_response(lambda response: "range=1h" in response.url):
        page.evaluate("document.getElementById('health').dispatchEvent(new CustomEvent('poll'))")
    page.wait_for_timeout(200)  # htmx settles the swap after the answer
    assert page.evaluate("document.activeElement.id") == f"marker-{action}"
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"/audit/\?before={action + 1}#audit-event-{action}$"))
    row = page.locator(f"#audit-event-{action}")
    expect(row).to_be_in_viewport()
    expect(row).to_contain_text("otto-operator")
    expect(row).to_contain_text("jobs.pause")
    screenshot(f"dashboard-charts-audit-row-{width}")
