import random
import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from portal.alerts.models import MetricSample
from portal.alerts.services import evaluate_all
from portal.jobs.models import Job
from tests.browser.conftest import set_visibility
from tests.conftest import PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_dashboard_shows_alerts_and_charts(page, live_server, personas, sign_in, screenshot):
    rng = random.Random(3)
    now = timezone.now()
    MetricSample.objects.bulk_create(
        MetricSample(
            taken_at=now - timezone.timedelta(minutes=10 * n),
            queue_length=rng.randint(0, 60) + (200 if 40 < n < 60 else 0),
            dead=3,
            calls_ok=rng.randint(20, 60),
            calls_failed=rng.randint(0, 6),
            calls_throttled=rng.choice([0, 0, 0, 1, 4]),
        )
        for n in range(144)
    )
    evaluate_all()  # no worker heartbeat in this test: "No worker running" fires
    sign_in(PERSONAS["operator"])
    banner = page.get_by_role("alert").filter(has_text="firing")
    expect(banner).to_contain_text("No worker running")
    page.get_by_role("link", name="24 h", exact=True).click()
    expect(page.get_by_role("group", name="Graph calls per 10 minutes")).to_be_visible()
    screenshot("dashboard-charts")
    # The alert's name leads to the page where the fix shows: the jobs waiting for a worker.
    banner.get_by_role("link", name="No worker running").click()
    expect(page).to_have_url(re.compile(r"/jobs/\?status=pending$"))


def is_poll(request) -> bool:
    return request.headers.get("x-portal-poll") == "1"


def test_the_dashboard_refreshes_itself_and_pauses_while_the_tab_is_hidden(
    page, live_server, personas, sign_in, screenshot
):
    polls = []
    page.on("request", lambda request: polls.append(request.url) if is_poll(request) else None)
    page.clock.install()  # the page's timers, moved on by run_for; time also passes normally
    sign_in(PERSONAS["operator"])
    dead_tile = page.locator('a.tile[href$="status=dead"] .num')
    expect(dead_tile).to_have_text("0")

    Job.objects.create(job_type="jobs.noop", status=Job.Status.DEAD, last_error="boom")
    with page.expect_request(is_poll) as first:
        page.clock.run_for(16_000)
    # The poll names the charts the page shows (kept while their minute is current).
    assert first.value.url.startswith(live_server.url + "/?drawn=6h")
    expect(dead_tile).to_have_text("1")  # no reload: the poll swapped #health in place
    expect(page.get_by_role("heading", name="Dashboard")).to_have_count(1)  # not a page in a page

    set_visibility(page, "hidden")
    Job.objects.create(job_type="jobs.noop", status=Job.Status.DEAD, last_error="boom")
    page.clock.run_for(120_000)
    page.wait_for_timeout(500)  # a poll fired by run_for would have been sent by now
    assert len(polls) == 1
    expect(dead_tile).to_have_text("1")

    with page.expect_request(is_poll):  # back to the tab: refreshed at once
        set_visibility(page, "visible")
    expect(dead_tile).to_have_text("2")
    with page.expect_request(is_poll):  # and every 15 s again
        page.clock.run_for(16_000)
    assert len(polls) == 3
    screenshot("dashboard-live-refresh")
