"""The second sign-in step (REQUIRE_MFA, on by default outside DEBUG)."""

import io
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.access import mfa
from portal.access.actors import Actor
from portal.access.api_tokens import create_token
from portal.audit.models import AuditEvent
from tests.conftest import PERSONA_PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def require_mfa(settings):
    settings.REQUIRE_MFA = True


def code_for(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):06d}"


def sign_in(client, username):
    response = client.post(reverse("login"), {"username": username, "password": PERSONA_PASSWORD})
    assert response.status_code == 302
    return client.get(response["Location"])


def set_up_link(user) -> str:
    return urlsplit(mfa.enrol_link(Actor.system("tests"), user)).path


def test_first_sign_in_enrols_an_authenticator_before_anything_else(client, sam_support):
    link = set_up_link(sam_support)
    response = sign_in(client, "sam-support")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("second_factor"))
    assert client.get(link)["Location"] == reverse("second_factor")
    page = client.get(reverse("second_factor"))
    assert b"Set up your authenticator" in page.content
    assert page.context["qr"].startswith("data:image/svg+xml")
    device = TOTPDevice.objects.get(user=sam_support, confirmed=False)
    wrong = client.post(reverse("second_factor"), {"token": "000000", "next": "/jobs/"})
    assert wrong.status_code == 400 and b"did not match" in wrong.content
    too_soon = client.post(reverse("second_factor"), {"token": code_for(device)})
    assert b"Too many wrong codes" in too_soon.content  # wrong codes slow guessing down
    device.refresh_from_db()
    device.throttle_reset()
    done = client.post(reverse("second_factor"), {"token": code_for(device), "next": "/jobs/"})
    assert done["Location"] == "/jobs/"
    assert client.get("/jobs/").status_code == 200
    device.refresh_from_db()
    assert device.confirmed
    outcomes = list(
        AuditEvent.objects.filter(action="auth.mfa_enroll")
        .values_list("outcome", flat=True)
        .order_by("id")
    )
    assert outcomes == ["failure", "failure", "success"]
    client.logout()
    sign_in(client, "sam-support")
    used = client.get(link)  # one time only
    assert used.status_code == 400 and b"already used" in used.content


def test_a_set_up_link_works_only_for_its_own_account(client, sam_support, vera_viewer):
    link = set_up_link(sam_support)
    sign_in(client, "vera-viewer")
    response = client.get(link)
    assert response.status_code == 400 and b"another account" in response.content
    assert client.get(reverse("second_factor")).status_code == 403
    assert not TOTPDevice.objects.filter(user=vera_viewer).exists()


def test_the_command_prints_a_set_up_link(sam_support):
    out = io.StringIO()
    call_command("portal_user", "enrol-link", "sam-support", stdout=out)
    assert "/login/set-up/" in out.getvalue()
    assert AuditEvent.objects.filter(action="user.mfa_enrol_link").exists()


def test_later_sign_ins_ask_for_the_code(client, sam_support):
    device = TOTPDevice.objects.create(user=sam_support, name="app", confirmed=True)
    page = client.get(sign_in(client, "sam-support")["Location"])
    assert b"Enter your code" in page.content
    assert client.get("/jobs/").status_code == 302  # not yet
    client.post(reverse("second_factor"), {"token": code_for(device)})
    assert client.get("/jobs/").status_code == 200
    assert AuditEvent.objects.filter(action="auth.mfa", outcome="success").exists()


def test_htmx_requests_are_sent_to_the_second_step_and_the_admin_too(client, ada_admin):
    client.force_login(ada_admin)
    response = client.get("/jobs/", headers={"HX-Request": "true"})
    assert response["HX-Redirect"].startswith(reverse("second_factor"))
    assert client.get("/admin/")["Location"].startswith(reverse("second_factor"))


def test_next_never_leaves_the_portal(client, sam_support):
    device = TOTPDevice.objects.create(user=sam_support, name="app", confirmed=True)
    client.force_login(sam_support)
    response = client.post(
        reverse("second_factor"), {"token": code_for(device), "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"


def test_api_tokens_need_no_second_factor(client, otto_operator):
    raw = create_token(Actor.system("tests"), "otto-operator", "script")[1]
    response = client.get("/api/queue/dead-letter", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200


def test_an_admin_resets_a_lost_authenticator(sam_support):
    TOTPDevice.objects.create(user=sam_support, name="app", confirmed=True)
    out = io.StringIO()
    call_command("portal_user", "reset-mfa", "sam-support", stdout=out)
    assert "Removed 1 authenticator" in out.getvalue()
    assert not TOTPDevice.objects.filter(user=sam_support).exists()
    assert AuditEvent.objects.filter(action="user.reset_mfa").exists()


def test_the_admin_never_shows_anyones_authenticator_key(client, ada_admin, sam_support):
    device = TOTPDevice.objects.create(user=sam_support, name="app", confirmed=True)
    client.force_login(ada_admin)
    TOTPDevice.objects.create(user=ada_admin, name="app", confirmed=True)
    session = client.session
    session["otp_device_id"] = TOTPDevice.objects.get(user=ada_admin).persistent_id
    session.save()
    page = client.get(f"/admin/otp_totp/totpdevice/{device.pk}/change/")
    assert page.status_code == 200
    assert device.key.encode() not in page.content
    config = client.get(f"/admin/otp_totp/totpdevice/{device.pk}/config/", follow=True)
    assert device.key.encode() not in config.content  # django-otp's QR view is gone
