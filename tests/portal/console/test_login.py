import time

import pytest
from django.urls import reverse

from portal.access.actors import Actor
from portal.access.middleware import SESSION_STARTED_KEY
from portal.audit.models import AuditEvent
from portal.audit.services import record
from tests.conftest import PERSONA_PASSWORD

pytestmark = pytest.mark.django_db


def sign_in(client, username, password):
    return client.post(
        reverse("login"),
        {"username": username, "password": password},
        REMOTE_ADDR="10.1.2.3",
        HTTP_USER_AGENT="pytest-browser",
    )


def test_signing_in_is_audited_with_ip_and_user_agent(client, sam_support):
    response = sign_in(client, "sam-support", PERSONA_PASSWORD)
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="auth.login", outcome="success")
    assert (event.actor_name, event.actor_role) == ("sam-support", "support")
    assert (event.ip, event.user_agent) == ("10.1.2.3", "pytest-browser")
    assert event.request_id


def test_a_wrong_password_is_refused_and_audited_without_the_password(client, sam_support):
    response = sign_in(client, "sam-support", "not-the-password")
    assert response.status_code == 200
    assert b"Wrong username or password" in response.content
    event = AuditEvent.objects.get(action="auth.login", outcome="failure")
    assert event.target_id == "sam-support"
    assert "not-the-password" not in str(event.params) + event.reason


def test_repeated_failures_lock_the_account_and_the_lockout_is_audited(
    client, sam_support, settings
):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "sam-support", "wrong")
    response = sign_in(client, "sam-support", PERSONA_PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed sign-ins" in response.content
    assert not response.wsgi_request.user.is_authenticated
    assert AuditEvent.objects.filter(
        action="auth.lockout", outcome="denied", target_id="sam-support"
    ).exists()


def test_the_lockout_is_per_username_and_address(client, sam_support, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "sam-support", "wrong")
    other_address = client.post(
        reverse("login"),
        {"username": "sam-support", "password": PERSONA_PASSWORD},
        REMOTE_ADDR="10.9.9.9",
    )
    assert other_address.status_code == 302


def test_sign_out_needs_a_post(client, sam_support):
    client.force_login(sam_support)
    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="auth.logout", actor_name="sam-support").exists()
    assert client.get(reverse("console:dashboard")).status_code == 302


def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.get(reverse("console:dashboard"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_an_htmx_request_from_an_expired_session_redirects_the_whole_page(client):
    response = client.get(reverse("console:dashboard"), headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("login")


def test_sessions_end_after_the_absolute_lifetime(client, sam_support, settings):
    client.force_login(sam_support)
    session = client.session
    session[SESSION_STARTED_KEY] = time.time() - settings.SESSION_MAX_HOURS * 3600 - 1
    session.save()
    assert client.get(reverse("console:dashboard")).status_code == 302


class TestDjangoAdmin:
    def test_only_admins_may_open_it(self, client, otto_operator, ada_admin):
        client.force_login(otto_operator)
        assert client.get("/admin/").status_code == 403
        denied = AuditEvent.objects.get(outcome="denied", actor_name="otto-operator")
        assert denied.target_id == "/admin/"
        client.force_login(ada_admin)
        assert client.get("/admin/").status_code == 200

    def test_anonymous_visitors_use_the_portal_sign_in(self, client):
        response = client.get("/admin/")
        assert response.status_code == 302
        follow = client.get(response["Location"])
        assert follow.status_code == 302
        assert follow["Location"].startswith(reverse("login"))

    def test_nobody_may_add_change_or_delete_audit_events(self, client, ada_admin):
        event = record("demo", actor=Actor.system("tests"))
        client.force_login(ada_admin)
        assert client.get("/admin/audit/auditevent/").status_code == 200
        assert client.get("/admin/audit/auditevent/add/").status_code == 403
        assert (
            client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code
            == 403
        )
        assert AuditEvent.objects.filter(pk=event.pk).exists()
