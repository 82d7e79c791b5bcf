"""Credentials page (portal/console/credentials_views.py): inventory, rotation, Teams sender."""

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from integrations.graph import auth
from integrations.microsoft import certificates
from integrations.microsoft.models import Credential, DelegatedAccount
from portal.audit.models import AuditEvent
from portal.lib.crypto import encrypt

pytestmark = pytest.mark.django_db

# The emulator and the settings that point the portal at it (bound so pytest finds them).


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


@pytest.mark.parametrize("persona", ["vera_viewer", "sam_support", "otto_operator"])
def test_only_admins_see_it(client, request, persona):
    client.force_login(request.getfixturevalue(persona))
    assert client.get("/credentials/").status_code == 403
    assert client.post("/credentials/add", {"value": "x"}).status_code == 403


def test_the_inventory_never_shows_a_secret_value(client, ada_admin):
    Credential.objects.create(
        display_name="prod",
        fingerprint="0a1b2c3d4e5f",
        secret_encrypted=encrypt("SUPER-SECRET-VALUE"),
        state="active",
    )
    client.force_login(ada_admin)
    response = client.get("/credentials/")
    body = response.content.decode()
    assert response.status_code == 200
    assert "…0a1b2c3d4e5f" in body and "SUPER-SECRET-VALUE" not in body
    assert "gAAAA" not in body  # no ciphertext either


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"value": ""}, "required"),
        ({"value": "x", "expires_on": "2001-01-01"}, "in the past"),
        ({"value": "x", "expires_on": "not a date"}, "valid date"),
    ],
)
def test_bad_input_is_a_message_not_a_500(client, ada_admin, data, message):
    client.force_login(ada_admin)
    response = client.post("/credentials/add", data, follow=True)
    assert response.status_code == 200
    assert any(message in m for m in messages_of(response))
    assert not Credential.objects.exists()


def test_steps_on_missing_credentials_explain_themselves(client, ada_admin):
    client.force_login(ada_admin)
    for url in (
        "/credentials/999/verify",
        "/credentials/999/activate",
        "/credentials/999/retire",
        "/credentials/rollback",
    ):
        response = client.post(url, follow=True)
        assert response.status_code == 200
        assert messages_of(response), url


def test_rotation_add_verify_activate_rollback_against_the_emulator(
    client, ada_admin, graph_settings, emulator
):
    auth.app_token()  # bootstraps the current secret as the active credential
    new_value = emulator.control.add_secret(emulator.client_id)["secretText"]
    client.force_login(ada_admin)
    response = client.post(
        "/credentials/add", {"value": new_value, "display_name": "Q3"}, follow=True
    )
    assert any("pending" in m for m in messages_of(response))
    new = Credential.objects.get(display_name="Q3")
    assert new_value not in response.content.decode()
    response = client.post(f"/credentials/{new.pk}/activate", follow=True)
    assert any("Verify credential" in m for m in messages_of(response))
    response = client.post(f"/credentials/{new.pk}/verify", follow=True)
    assert any("works" in m for m in messages_of(response))
    response = client.post(f"/credentials/{new.pk}/activate", follow=True)
    assert any("now the active credential" in m for m in messages_of(response))
    new.refresh_from_db()
    assert new.state == "active"
    assert Credential.objects.get(state="grace")
    assert "Roll back to this" in response.content.decode()
    client.post("/credentials/rollback", {"confirm": "yes"})
    new.refresh_from_db()
    assert new.state == "pending"
    actions = list(
        AuditEvent.objects.filter(action__startswith="credential.", actor_name="ada-admin")
        .order_by("id")
        .values_list("action", flat=True)
    )
    # The refused first activation changed nothing, so it left no event.
    assert actions == [
        "credential.add",
        "credential.verify",
        "credential.activate",
        "credential.rollback",
    ]


def test_a_wrong_secret_fails_verification_with_the_reason(
    client, ada_admin, graph_settings, emulator
):
    client.force_login(ada_admin)
    client.post("/credentials/add", {"value": "typo-secret", "display_name": "typo"})
    pending = Credential.objects.get(display_name="typo")
    response = client.post(f"/credentials/{pending.pk}/verify", follow=True)
    assert any("did not get a token" in m for m in messages_of(response))
    assert "AADSTS7000215" in response.content.decode()


def test_connect_the_teams_sender_through_the_callback(client, ada_admin, graph_settings, emulator):
    client.force_login(ada_admin)
    # The app registration lists the callback exactly as the portal sends it (the page shows
    # it); Entra and the emulator refuse any other.
    emulator.control.set_redirect_uris(
        emulator.client_id, ["http://127.0.0.1:8000/credentials/teams-sender/callback"]
    )
    response = client.post(
        "/credentials/teams-sender/connect",
        {"login_hint": emulator.service_account_upn},
        HTTP_HOST="127.0.0.1:8000",
    )
    assert response.status_code == 302
    auth_url = response["Location"]
    assert auth_url.startswith(emulator.authority)
    assert "flow" not in auth_url
    # The admin's browser at the identity platform, which redirects back to the callback.
    answer = emulator.session().get(auth_url, allow_redirects=False, timeout=10)
    back = urlsplit(answer.headers["Location"])
    assert back.netloc == "127.0.0.1:8000"
    assert back.path == "/credentials/teams-sender/callback"
    response = client.get(
        back.path, {k: v[0] for k, v in parse_qs(back.query).items()}, follow=True
    )
    assert any("sent as" in m for m in messages_of(response))
    account = DelegatedAccount.objects.get(disconnected_at__isnull=True)
    assert account.upn == emulator.service_account_upn
    assert account.upn in response.content.decode()
    # A replayed callback finds no flow in the session.
    response = client.get(
        back.path, {k: v[0] for k, v in parse_qs(back.query).items()}, follow=True
    )
    assert any("No Teams sender sign-in" in m for m in messages_of(response))
    response = client.post("/credentials/teams-sender/disconnect", follow=True)
    assert any("disconnected" in m for m in messages_of(response))
    assert not DelegatedAccount.objects.filter(disconnected_at__isnull=True).exists()


def test_a_forged_callback_is_refused(client, ada_admin, graph_settings, emulator):
    client.force_login(ada_admin)
    client.post("/credentials/teams-sender/connect")
    response = client.get(
        "/credentials/teams-sender/callback", {"code": "x", "state": "forged"}, follow=True
    )
    assert any("not connected" in m for m in messages_of(response))
    assert AuditEvent.objects.get(action="teams_sender.connect").outcome == "failure"


def test_an_error_from_the_identity_platform_is_shown(client, ada_admin, graph_settings, emulator):
    client.force_login(ada_admin)
    client.post("/credentials/teams-sender/connect")
    response = client.get(
        "/credentials/teams-sender/callback",
        {"error": "access_denied", "error_description": "User declined"},
        follow=True,
    )
    assert any("access_denied — User declined" in m for m in messages_of(response))


def test_upload_a_certificate_then_verify_and_activate_it(
    client, ada_admin, graph_settings, emulator
):
    auth.app_token()
    key_pem, cert_pem = certificates.generate("console-upload", days=30)
    emulator.control.add_certificate(emulator.client_id, cert_pem)
    client.force_login(ada_admin)
    bad = client.post(
        "/credentials/add-certificate",
        {"certificate_file": _upload(cert_pem)},
        follow=True,
    )
    assert any("not its private key" in m for m in messages_of(bad))
    assert not Credential.objects.filter(kind="certificate").exists()
    response = client.post(
        "/credentials/add-certificate",
        {"certificate_file": _upload(key_pem + cert_pem), "certificate_name": "Q3 cert"},
        follow=True,
    )
    added = Credential.objects.get(kind="certificate")
    assert any(added.thumbprint in m for m in messages_of(response))
    body = response.content.decode()
    assert added.thumbprint in body and "CN=console-upload" in body and "PRIVATE" not in body
    client.post(f"/credentials/{added.pk}/verify")
    response = client.post(f"/credentials/{added.pk}/activate", follow=True)
    assert any("(certificate) is now the active credential" in m for m in messages_of(response))


def test_workload_identity_is_offered_only_with_a_token_file(client, ada_admin, settings, tmp_path):
    client.force_login(ada_admin)
    settings.MICROSOFT_CLIENT_ASSERTION_FILE = ""
    assert b"Add workload identity" not in client.get("/credentials/").content
    missing = tmp_path / "token"
    settings.MICROSOFT_CLIENT_ASSERTION_FILE = str(missing)
    assert b"Add workload identity" in client.get("/credentials/").content
    response = client.post("/credentials/add-workload-identity", follow=True)
    assert any("cannot be read" in m for m in messages_of(response))
    assert not Credential.objects.exists()


def _upload(text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile("portal.pem", text.encode(), content_type="application/x-pem-file")


def _stored(display_name: str, state: str, **fields) -> Credential:
    return Credential.objects.create(
        display_name=display_name,
        fingerprint=display_name[:12],
        secret_encrypted=encrypt("value of " + display_name),
        state=state,
        **fields,
    )


def test_retire_shows_what_happens_and_asks_for_the_typed_word(client, ada_admin):
    _stored("current", "active")
    old = _stored("previous", "grace", grace_until=timezone.now() + timedelta(hours=5))
    client.force_login(ada_admin)
    page = client.get(f"/credentials/{old.pk}/retire")
    assert page.status_code == 200
    body = page.content.decode()
    assert "rolling back to it is no longer possible" in body
    assert "Type <strong>retire</strong> to confirm" in body
    # A click without the word changes nothing and says why.
    refused = client.post(f"/credentials/{old.pk}/retire", {"confirm": "yes"})
    assert refused.status_code == 400
    assert "Type &quot;retire&quot; to confirm." in refused.content.decode()
    old.refresh_from_db()
    assert old.state == "grace" and old.secret_encrypted
    client.post(f"/credentials/{old.pk}/retire", {"confirm": " Retire "})
    old.refresh_from_db()
    assert old.state == "retired"
    assert AuditEvent.objects.filter(action="credential.retire", target_id=str(old.pk)).exists()


def test_the_htmx_confirmation_is_the_card_alone(client, ada_admin):
    old = _stored("previous", "pending")
    client.force_login(ada_admin)
    body = client.get(f"/credentials/{old.pk}/retire", headers={"HX-Request": "true"}).content
    assert body.decode().lstrip().startswith('<section class="card confirm-card"')


def test_roll_back_warns_against_a_failing_or_expiring_secret(client, ada_admin):
    now = timezone.now()
    current = _stored("current", "active")
    old = _stored(
        "previous",
        "grace",
        grace_until=now + timedelta(hours=5),
        expires_at=now + timedelta(days=3, hours=1),
        last_verified_at=now - timedelta(days=2),
        last_error="AADSTS7000222: the provided client secret keys are expired.",
        last_error_at=now - timedelta(hours=1),
    )
    client.force_login(ada_admin)
    body = client.get("/credentials/rollback").content.decode()
    assert "(3 days left)" in body
    assert "Its last token request failed" in body and "AADSTS7000222" in body
    assert "Roll back anyway" in body
    # Without the confirmation nothing changes.
    assert client.post("/credentials/rollback").status_code == 400
    current.refresh_from_db()
    assert current.state == "active"
    client.post("/credentials/rollback", {"confirm": "yes"})
    old.refresh_from_db()
    assert old.state == "active"


def test_roll_back_to_an_expired_secret_says_it_cannot_work(client, ada_admin):
    _stored("current", "active")
    _stored(
        "previous",
        "grace",
        grace_until=timezone.now() + timedelta(hours=5),
        expires_at=timezone.now() - timedelta(hours=1),
    )
    client.force_login(ada_admin)
    body = client.get("/credentials/rollback").content.decode()
    assert "Rolling back cannot work:" in body and "Entra ID refuses it" in body
    assert "Roll back anyway" not in body and 'name="confirm"' not in body
