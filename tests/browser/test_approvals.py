"""The demo's four-eyes flow: an operator's "Retry all" of 150 dead jobs waits for a second
operator, runs once on approval, and both names are in the audit log."""

import re

import pytest
from playwright.sync_api import expect

from portal.access.actors import Actor
from portal.approvals import services
from portal.jobs import bulk
from portal.jobs.models import BulkOperation, Job
from tests.browser.test_jobs import make_dead
from tests.conftest import PERSONAS
from tests.portal.approvals.conftest import person

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_retry_all_of_150_waits_for_a_second_operator_and_runs_once(
    page, live_server, personas, sign_in, screenshot
):
    person("olga-operator", "operator")
    services.set_policy(Actor.system("tests"), ["jobs.retry_all"], 100)
    make_dead(150)

    sign_in(PERSONAS["operator"])
    page.goto(live_server.url + "/jobs/?status=dead")
    page.get_by_role("link", name="Retry all matching…").click()
    page.get_by_label(re.compile("type .* to confirm", re.I)).fill("150")
    page.get_by_role("button", name="Retry 150 jobs").click()
    expect(page.get_by_role("heading", name=re.compile("needs a second person"))).to_be_visible()
    expect(page.locator(".impact")).to_contain_text("150 items")
    page.get_by_label(re.compile("^Why")).fill("The Graph outage is over; retry its failures.")
    screenshot("approval-request")
    page.get_by_role("button", name="Request approval").click()
    expect(page.locator("#approval-state")).to_have_text("Waiting for approval")
    expect(page.get_by_role("button", name="Approve and run")).to_have_count(0)
    nav = page.get_by_role("navigation", name="Main")
    work = nav.locator("summary", has_text="Work")
    expect(work.locator(".badge")).to_have_text("1")  # the group shows what waits in it
    work.click()
    expect(nav.get_by_role("link", name=re.compile("Approvals"))).to_contain_text("1")
    assert Job.objects.filter(status="dead").count() == 150
    assert not BulkOperation.objects.exists()
    page.get_by_role("button", name="Sign out").click()

    sign_in("olga-operator")
    page.goto(live_server.url + "/approvals/")
    page.get_by_role("link", name=re.compile("Retry all dead jobs")).click()
    page.get_by_label(re.compile("^Comment")).fill("Outage closed at 10:40; go ahead.")
    screenshot("approval-decide")
    page.get_by_role("button", name="Approve and run").click()
    expect(page.locator("#approval-state")).to_have_text("Done")
    expect(page.get_by_role("link", name="see what it did")).to_be_visible()

    operation = BulkOperation.objects.get()
    assert operation.total == 150 and operation.created_by == PERSONAS["operator"]
    bulk.process(operation.pk)
    assert Job.objects.filter(status="pending", job_type="jobs.noop").count() == 150

    page.goto(live_server.url + "/audit/")
    rows = page.locator("#results tbody")
    expect(rows).to_contain_text("approval.approve")
    expect(rows).to_contain_text("olga-operator")
    expect(rows).to_contain_text("approval.run")
    expect(rows).to_contain_text(PERSONAS["operator"])
    screenshot("approval-audit")
