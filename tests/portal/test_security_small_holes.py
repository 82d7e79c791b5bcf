"""The smaller holes, each reproduced as it was found, then fixed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import pytest
import time_machine
from django.conf import settings
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from integrations.microsoft import subscriptions
from integrations.microsoft.diagnosis import COMPARES_PER_MINUTE
from integrations.microsoft.models import MonitoredUser
from portal.access import mfa
from portal.access.actors import Actor
from portal.access.api_tokens import create_token
from portal.access.middleware import POLL_HEADER, SESSION_ACTIVE_KEY
from portal.audit.services import record
from portal.jobs.models import Job

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------ _back-style redirects


@pytest.mark.parametrize(
    "evil", ["/\\evil.com", "/\\/evil.com", "//evil.com", "https://evil.com/", "/\t/evil.com"]
)
def test_reproduction_back_redirects_stay_in_the_portal(client, sam_support, evil):
    job = Job.objects.create(job_type="jobs.noop", status=Job.Status.DEAD)
    client.force_login(sam_support)
    response = client.post(f"/jobs/{job.pk}/retry", {"next": evil})
    assert response.status_code == 302
    assert response["Location"] == f"/jobs/{job.pk}/"


def test_subscription_back_redirects_stay_in_the_portal(client, otto_operator):
    client.force_login(otto_operator)
    response = client.post("/subscriptions/1/renew", {"next": "/\\evil.com"})
    assert not response.get("Location", "").startswith("/\\")


def test_a_local_back_address_is_still_followed(client, sam_support):
    job = Job.objects.create(job_type="jobs.noop", status=Job.Status.DEAD)
    client.force_login(sam_support)
    response = client.post(f"/jobs/{job.pk}/retry", {"next": "/jobs/?status=dead"})
    assert response["Location"] == "/jobs/?status=dead"


# ------------------------------------------------------------ timeline and the audit log


def test_reproduction_viewers_do_not_read_audit_rows_on_the_timeline(client, personas):
    user = MonitoredUser.objects.create(identifier="kim@example.com")
    record(
        "monitored_user.secret_looking_action",
        actor=Actor.system("ops"),
        target_type="monitored_user",
        target_id=user.pk,
    )
    client.force_login(personas["viewer"])
    page = client.get(f"/sync/users/{user.pk}/timeline").content.decode()
    assert "secret_looking_action" not in page
    client.force_login(personas["support"])  # view_audit
    page = client.get(f"/sync/users/{user.pk}/timeline").content.decode()
    assert "secret_looking_action" in page


# ------------------------------------------------------------ compare with Graph


def test_reproduction_viewers_cannot_make_the_portal_call_graph(client, vera_viewer, monkeypatch):
    listed = mock.create_autospec(subscriptions.list_remote, return_value=[])
    monkeypatch.setattr(subscriptions, "list_remote", listed)
    client.force_login(vera_viewer)
    assert client.get("/subscriptions/compare").status_code == 403
    assert not listed.called


def test_compare_is_rate_limited_per_person(client, otto_operator, monkeypatch):
    listed = mock.create_autospec(subscriptions.list_remote, return_value=[])
    monkeypatch.setattr(subscriptions, "list_remote", listed)
    client.force_login(otto_operator)
    token = create_token(Actor.system("tests"), otto_operator.username, "compare")[1]
    api = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    # At the start of a minute, with the clock held: the window cannot roll over mid-test.
    with time_machine.travel(datetime(2026, 1, 5, 9, 30, 0, tzinfo=UTC), tick=False) as clock:
        statuses = [
            client.get("/subscriptions/compare").status_code for _ in range(COMPARES_PER_MINUTE - 1)
        ]
        # The person's API token draws on the same budget as their session.
        statuses.append(client.get("/api/subscriptions/compare", **api).status_code)
        assert statuses == [200] * COMPARES_PER_MINUTE
        assert listed.call_count == COMPARES_PER_MINUTE
        limited = client.get("/subscriptions/compare")
        assert limited.status_code == 429
        assert limited["Retry-After"] == "60" and "try again" in limited.content.decode()
        limited_api = client.get("/api/subscriptions/compare", **api)
        assert limited_api.status_code == 429 and limited_api.json()["error"] == "rate_limited"
        assert listed.call_count == COMPARES_PER_MINUTE
        clock.shift(45)
        assert client.get("/subscriptions/compare")["Retry-After"] == "15"
        clock.shift(15)  # the next minute
        assert client.get("/subscriptions/compare").status_code == 200


# ------------------------------------------------------------ authenticator set-up page


def test_reproduction_the_authenticator_setup_page_is_never_stored(client, vera_viewer, settings):
    settings.REQUIRE_MFA = True
    client.force_login(vera_viewer)

    client.get(urlsplit(mfa.enrol_link(Actor.system("tests"), vera_viewer)).path)
    response = client.get("/login/second-step/")
    assert response.status_code == 200 and b"data:image/svg+xml" in response.content
    assert "no-store" in response["Cache-Control"]


# ------------------------------------------------------------ CSP


def test_reproduction_forms_may_post_only_to_the_portal(client):
    response = client.get("/login/")
    policy = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    assert policy["form-action"] == "'self'"


def test_the_credentials_page_lets_its_forms_lead_only_to_the_identity_platform(
    client, ada_admin, settings
):
    # Connecting the Teams sender posts to the portal, which redirects to the sign-in: the
    # browser checks form-action on that redirect too (a browser test connects one).
    settings.MICROSOFT_AUTHORITY_HOST = "https://login.microsoftonline.com"
    client.force_login(ada_admin)
    response = client.get("/credentials/")
    policy = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    assert policy["form-action"] == "'self' https://login.microsoftonline.com"
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"


# ------------------------------------------------------------ live-refresh polling


def _age_session(client, seconds):
    session = client.session
    session[SESSION_ACTIVE_KEY] = time.time() - seconds
    session.save()


def test_reproduction_polling_does_not_keep_a_session_alive(client, vera_viewer):
    idle = settings.SESSION_IDLE_MINUTES * 60
    client.force_login(vera_viewer)
    assert client.get("/").status_code == 200
    _age_session(client, idle - 60)
    poll = {"HX-Request": "true", "X-Portal-Poll": "1"}
    assert client.get("/", headers=poll).status_code == 200  # still within the idle time
    _age_session(client, idle - 30)  # ... and polling did not renew it:
    assert time.time() - client.session[SESSION_ACTIVE_KEY] >= idle - 31
    _age_session(client, idle + 1)
    response = client.get("/", headers=poll)
    assert response.status_code in (302, 401, 403) or response.get("HX-Redirect") == "/login/"
    assert "_auth_user_id" not in client.session


def test_a_persons_request_counts_as_activity(client, vera_viewer):
    idle = settings.SESSION_IDLE_MINUTES * 60
    client.force_login(vera_viewer)
    client.get("/")
    _age_session(client, idle - 60)
    assert client.get("/jobs/").status_code == 200
    assert time.time() - client.session[SESSION_ACTIVE_KEY] < 5


def test_the_console_marks_its_polling_requests():
    """Live refresh is portal/poll.js: it fires `poll` on [data-poll-seconds] elements and
    marks those requests with the header the idle timeout ignores."""

    script = Path(settings.BASE_DIR, "static", "portal", "poll.js").read_text()
    assert f'headers["{POLL_HEADER}"] = "1"' in script
    templates = Path(settings.BASE_DIR, "templates")
    pages = {path: path.read_text() for path in templates.rglob("*.html")}
    assert [path for path, text in pages.items() if "data-poll-seconds" in text]
    assert not [path for path, text in pages.items() if 'hx-trigger="every' in text]


# ------------------------------------------------------------ the emulator guard


def _settings_in_subprocess(code: str, **env: str) -> subprocess.CompletedProcess:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("MICROSOFT_", "DJANGO_SETTINGS"))
    }
    base.update(
        PORTAL_IGNORE_DOTENV="1",
        SECRET_KEY="s" * 60,
        DEBUG="false",
        FIELD_ENCRYPTION_KEYS="Z7v0bqVXc3L8RJd2f5m9gQq5bUq1ZkBl3sRr8uH1o2U=",
        AUDIT_CHAIN_KEY="k" * 40,
        DJANGO_SETTINGS_MODULE="portal.settings",
    )
    base.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        env=base,
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        timeout=60,
    )


def test_reproduction_a_loopback_graph_url_needs_the_emulator_switch():
    result = _settings_in_subprocess(
        "print('loaded')", MICROSOFT_GRAPH_URL="https://127.0.0.1:8443/v1.0"
    )
    assert result.returncode != 0
    assert "MICROSOFT_GRAPH_URL" in result.stderr and "MICROSOFT_ALLOW_EMULATOR" in result.stderr


def test_the_emulator_app_is_installed_only_in_development():
    check = (
        "from django.conf import settings; "
        "print('integrations.graph_emulator' in settings.INSTALLED_APPS)"
    )
    production = _settings_in_subprocess(check)
    assert production.stdout.strip() == "False", production.stderr
    development = _settings_in_subprocess(check, DEBUG="true")
    assert development.stdout.strip() == "True", development.stderr


# ------------------------------------------------------------ MFA enrolment


def test_reproduction_a_password_alone_cannot_enrol_an_authenticator(client, vera_viewer, settings):
    settings.REQUIRE_MFA = True
    client.force_login(vera_viewer)  # a stolen password: no authenticator yet
    page = client.get("/login/second-step/")
    assert b"data:image/svg+xml" not in page.content
    device = TOTPDevice.objects.filter(user=vera_viewer).first()
    if device is not None:  # the old code handed out the key: try to confirm it
        code = totp(device.bin_key, device.step, device.t0, device.digits, device.drift)
        client.post("/login/second-step/", {"token": f"{code:06d}"})
    assert not TOTPDevice.objects.filter(user=vera_viewer, confirmed=True).exists()
    assert client.get("/jobs/").status_code == 302
