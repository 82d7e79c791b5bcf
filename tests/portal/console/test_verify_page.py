"""Verify integration page (portal/console/verify_views.py)."""

from unittest import mock

import pytest

from integrations.microsoft import verify
from portal.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_checks(monkeypatch):
    """Two checks with the real checks' signature: one passes, one fails."""
    good = mock.create_autospec(
        verify.check_token, return_value=verify.CheckResult("Token", True, "a token was issued")
    )
    bad = mock.create_autospec(
        verify.check_webhook,
        return_value=verify.CheckResult("Webhook endpoint", False, "https://x answered 404"),
    )
    monkeypatch.setattr(verify, "CHECKS", [good, bad])


def test_viewers_may_not_run_it(client, vera_viewer):
    client.force_login(vera_viewer)
    assert client.get("/verify/").status_code == 403
    assert client.post("/verify/run", {"timeout": "5"}).status_code == 403


def test_the_page_lists_the_checks_without_running_them(client, sam_support, fake_checks):
    client.force_login(sam_support)
    response = client.get("/verify/")
    assert response.status_code == 200
    assert response.context["results"] is None
    assert not AuditEvent.objects.filter(action="integration.verify").exists()


def test_support_runs_it_and_gets_a_pass_fail_line_per_check(client, sam_support, fake_checks):
    client.force_login(sam_support)
    response = client.post("/verify/run", {"timeout": "5"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="results"')
    assert "1 of 2 checks failed" in body
    assert "✔ pass" in body and "✘ fail" in body and "answered 404" in body
    event = AuditEvent.objects.get(action="integration.verify")
    assert event.actor_name == "sam-support" and event.outcome == "failure"
    # The run is remembered under "Recent runs".
    assert "Webhook endpoint" in client.get("/verify/").content.decode()


def test_without_htmx_the_form_posts_to_a_full_page(client, sam_support, fake_checks):
    client.force_login(sam_support)
    response = client.post("/verify/run", {"timeout": "10"})
    assert response.status_code == 200
    assert "<h1>Verify integration</h1>" in response.content.decode()


@pytest.mark.parametrize("data", [{}, {"timeout": "999"}, {"timeout": "abc"}])
def test_a_bad_timeout_is_a_400_and_runs_nothing(client, sam_support, fake_checks, data):
    client.force_login(sam_support)
    assert client.post("/verify/run", data).status_code == 400
    assert not AuditEvent.objects.filter(action="integration.verify").exists()
