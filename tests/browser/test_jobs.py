import re

import pytest
from playwright.sync_api import expect

from portal.audit.models import AuditEvent
from portal.console.jobs_views import TYPED_CONFIRMATION_THRESHOLD
from portal.jobs.models import Job
from tests.browser.conftest import open_nav_item
from tests.conftest import PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def make_dead(n):
    return [
        Job.objects.create(
            job_type="jobs.noop",
            status=Job.Status.DEAD,
            last_error="Transient: Graph answered 503 Service Unavailable",
            error_signature="5f3a9c0d1e2b4a67",
            max_attempts=5,
            attempts=5,
            payload={"userId": f"driver{i}@fleetdemo.onmicrosoft.com"},
        )
        for i in range(n)
    ]


def test_support_retries_a_dead_job_and_finds_it_in_the_audit_log(
    page, live_server, personas, sign_in, screenshot
):
    job = make_dead(3)[0]
    sign_in(PERSONAS["support"])
    open_nav_item(page, "Jobs")
    expect(page.get_by_role("heading", name="Dead jobs")).to_be_visible()
    screenshot("jobs-dead")
    page.get_by_role("link", name=str(job.pk), exact=True).click()
    expect(page.get_by_role("heading", name=re.compile(f"Job #{job.pk}"))).to_be_visible()
    screenshot("job-detail")
    page.get_by_role("button", name="Retry now").click()
    expect(page.locator(".messages")).to_contain_text("queued again")
    assert Job.objects.get(pk=job.pk).status == Job.Status.PENDING
    open_nav_item(page, "Audit log")
    expect(page.locator("#results tbody tr").first).to_contain_text("job.retry")


def test_operator_retries_all_with_typed_confirmation_and_watches_progress(
    page, live_server, personas, sign_in, screenshot
):
    count = TYPED_CONFIRMATION_THRESHOLD + 5
    make_dead(count)
    sign_in(PERSONAS["operator"])
    page.goto(live_server.url + "/jobs/?status=dead")
    page.get_by_role("link", name="Retry all matching…").click()
    expect(page.locator(".impact")).to_contain_text(f"{count} dead jobs")
    page.get_by_label(re.compile("type .* to confirm", re.I)).fill(str(count))
    screenshot("retry-all-confirm")
    page.get_by_role("button", name=f"Retry {count} jobs").click()
    expect(page.get_by_role("heading", name=re.compile("Retry all — operation"))).to_be_visible()
    expect(page.get_by_role("progressbar")).to_be_visible()
    screenshot("retry-all-progress")
    assert AuditEvent.objects.filter(
        action="job.retry_all", actor_name=PERSONAS["operator"], params__count=count
    ).exists()
