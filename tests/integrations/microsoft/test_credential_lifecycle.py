from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
import time_machine
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.utils import timezone

from integrations import graph
from integrations.graph import auth
from integrations.graph.errors import TokenError
from integrations.microsoft import credential_lifecycle
from integrations.microsoft.admin import CredentialAdmin, DelegatedAccountAdmin
from integrations.microsoft.credential_lifecycle import CredentialError
from integrations.microsoft.models import Credential, GraphCall
from portal.access.actors import Actor
from portal.audit.models import AuditEvent
from portal.lib import crypto
from tests.integrations.microsoft.conftest import token_requests

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_actor(ada_admin):
    return Actor(kind="user", name="ada-admin", role="admin", user=ada_admin)


class TestCrypto:
    def test_round_trip_and_key_rotation(self, settings):
        old = settings.FIELD_ENCRYPTION_KEYS[0]
        token = crypto.encrypt("s3cret value")
        assert "s3cret" not in token and crypto.decrypt(token) == "s3cret value"
        new = Fernet.generate_key().decode()
        settings.FIELD_ENCRYPTION_KEYS = [new, old]
        assert crypto.decrypt(token) == "s3cret value"
        rotated = crypto.rotate(token)
        settings.FIELD_ENCRYPTION_KEYS = [new]
        assert crypto.decrypt(rotated) == "s3cret value"
        with pytest.raises(crypto.DecryptionError, match="None of the FIELD_ENCRYPTION_KEYS"):
            crypto.decrypt(token)

    def test_missing_or_broken_keys_are_loud(self, settings):
        settings.FIELD_ENCRYPTION_KEYS = []
        with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEYS is empty"):
            crypto.encrypt("x")
        settings.FIELD_ENCRYPTION_KEYS = ["not-a-key"]
        with pytest.raises(ImproperlyConfigured, match="#1 is not a valid Fernet key") as e:
            crypto.encrypt("x")
        assert "not-a-key" not in str(e.value)

    def test_the_fingerprint_reveals_no_part_of_the_secret(self):
        secret = "abcdEFGH1234~wxyz"
        print_ = crypto.fingerprint(secret)
        assert len(print_) == 12 and "wxyz" not in print_ and "abcd" not in print_


def _new_emulator_secret(emulator) -> str:
    return emulator.control.add_secret(emulator.client_id)["secretText"]


# Activation invalidates the process's MSAL app on commit, so these tests really commit.
@pytest.mark.django_db(transaction=True)
class TestRotation:
    def test_add_verify_activate_rollback_with_two_valid_secrets(
        self, graph_settings, emulator, admin_actor
    ):
        auth.app_token()  # bootstraps credential #1 from the environment
        original = Credential.objects.get(state="active")
        new_value = _new_emulator_secret(emulator)

        pending = credential_lifecycle.add_secret(
            admin_actor, new_value, "Q3 rotation", timezone.now() + timedelta(days=180)
        )
        assert pending.state == "pending" and not pending.is_verified
        with pytest.raises(CredentialError, match="Verify"):
            credential_lifecycle.activate(admin_actor, pending.pk)
        outcome = credential_lifecycle.verify_secret(admin_actor, pending.pk)
        assert outcome.ok and "Mail.Send" in outcome.roles
        credential_lifecycle.activate(admin_actor, pending.pk)

        original.refresh_from_db()
        assert original.state == "grace"
        assert original.grace_until == pytest.approx(
            timezone.now() + timedelta(hours=24), abs=timedelta(minutes=1)
        )
        # The process now uses the new secret: prove it by deleting the old one in Entra ID.
        old_key = next(
            s["keyId"]
            for s in emulator.control.secrets(emulator.client_id)
            if s["displayName"] == "demo secret"
        )
        emulator.control.remove_secret(emulator.client_id, old_key)
        before = len(token_requests(emulator))
        assert graph.get("/users", params={"$top": "1"})["value"]
        assert len(token_requests(emulator)) == before + 1  # a new token, new secret

        # Rollback brings back the (now deleted) old one: tokens fail, as they should.
        credential_lifecycle.rollback(admin_actor)
        original.refresh_from_db()
        pending.refresh_from_db()
        assert (original.state, pending.state) == ("active", "pending")
        assert pending.last_verified_at is None  # must be re-verified before re-activation
        with pytest.raises(TokenError, match="AADSTS7000215"):
            auth.app_token()

        actions = list(
            AuditEvent.objects.filter(target_type="credential")
            .order_by("id")
            .values_list("action", "outcome")
        )
        assert actions == [
            ("credential.bootstrap", "success"),
            ("credential.add", "success"),
            ("credential.verify", "success"),
            ("credential.activate", "success"),
            ("credential.rollback", "success"),
        ]

    def test_a_wrong_secret_stays_pending_with_its_error(
        self, graph_settings, emulator, admin_actor
    ):
        pending = credential_lifecycle.add_secret(admin_actor, "not-the-right-secret", "typo")
        outcome = credential_lifecycle.verify_secret(admin_actor, pending.pk)
        assert not outcome.ok and "AADSTS7000215" in outcome.detail
        pending.refresh_from_db()
        assert pending.last_error and pending.state == "pending"
        # Verifying twice in a row reaches the identity platform twice: no stale MSAL cache.
        credential_lifecycle.verify_secret(admin_actor, pending.pk)
        tokens = emulator.control.requests_log(path="/oauth2/v2.0/token")
        assert [e["status"] for e in tokens] == [401, 401]
        with pytest.raises(CredentialError, match="Verify"):
            credential_lifecycle.activate(admin_actor, pending.pk)
        assert AuditEvent.objects.filter(action="credential.verify", outcome="failure").count() == 2

    def test_a_second_activation_retires_the_older_grace_one(
        self, graph_settings, emulator, admin_actor
    ):
        auth.app_token()
        for name in ("second", "third"):
            c = credential_lifecycle.add_secret(admin_actor, _new_emulator_secret(emulator), name)
            credential_lifecycle.verify_secret(admin_actor, c.pk)
            credential_lifecycle.activate(admin_actor, c.pk)
        states = dict(Credential.objects.values_list("display_name", "state"))
        assert states == {
            "From MICROSOFT_CLIENT_SECRET": "retired",
            "second": "grace",
            "third": "active",
        }
        retired = Credential.objects.get(state="retired")
        assert retired.secret_encrypted == ""
        with pytest.raises(ValueError, match="erased"):
            retired.secret_value()

    def test_retire_rules(self, graph_settings, emulator, admin_actor):
        auth.app_token()
        active = Credential.objects.get(state="active")
        with pytest.raises(CredentialError, match="cannot be retired"):
            credential_lifecycle.retire(admin_actor, active.pk)
        pending = credential_lifecycle.add_secret(admin_actor, "some-other-secret", "spare")
        credential_lifecycle.retire(admin_actor, pending.pk)
        with pytest.raises(CredentialError, match="already retired"):
            credential_lifecycle.retire(admin_actor, pending.pk)
        with pytest.raises(CredentialError, match="no credential"):
            credential_lifecycle.retire(admin_actor, 999_999)

    def test_duplicates_and_empty_values_are_refused(self, graph_settings, emulator, admin_actor):
        auth.app_token()
        with pytest.raises(CredentialError, match="already stored"):
            credential_lifecycle.add_secret(admin_actor, emulator.client_secret, "again")
        with pytest.raises(CredentialError, match="empty"):
            credential_lifecycle.add_secret(admin_actor, "   ", "blank")

    def test_rollback_needs_a_grace_credential(self, graph_settings, emulator, admin_actor):
        auth.app_token()
        with pytest.raises(CredentialError, match="no credential in its grace"):
            credential_lifecycle.rollback(admin_actor)

    def test_grace_periods_end_on_schedule(self, graph_settings, emulator, admin_actor):
        auth.app_token()
        c = credential_lifecycle.add_secret(admin_actor, _new_emulator_secret(emulator), "next")
        credential_lifecycle.verify_secret(admin_actor, c.pk)
        credential_lifecycle.activate(admin_actor, c.pk)
        assert credential_lifecycle.retire_expired_grace() == 0
        with time_machine.travel(timezone.now() + timedelta(hours=25)):
            assert credential_lifecycle.retire_expired_grace() == 1
        event = AuditEvent.objects.filter(action="credential.retire").get()
        assert event.actor_type == "system" and event.reason == "grace period over"

    def test_rollback_ends_with_the_grace_period(self, graph_settings, emulator, admin_actor):
        auth.app_token()
        c = credential_lifecycle.add_secret(admin_actor, _new_emulator_secret(emulator), "next")
        credential_lifecycle.verify_secret(admin_actor, c.pk)
        credential_lifecycle.activate(admin_actor, c.pk)
        # Past grace_until, before the retire schedule has run: no rollback to the old one.
        with (
            time_machine.travel(timezone.now() + timedelta(hours=25)),
            pytest.raises(CredentialError, match="grace period ended"),
        ):
            credential_lifecycle.rollback(admin_actor)
        states = dict(Credential.objects.values_list("display_name", "state"))
        assert states == {"From MICROSOFT_CLIENT_SECRET": "grace", "next": "active"}
        assert not AuditEvent.objects.filter(action="credential.rollback").exists()

    @pytest.mark.parametrize("step", ["add", "verify", "activate", "rollback", "retire"])
    def test_each_step_requires_rotate_credentials(self, graph_settings, otto_operator, step):
        actor = Actor(kind="user", name="otto-operator", role="operator", user=otto_operator)
        calls = {
            "add": lambda: credential_lifecycle.add_secret(actor, "x", "y"),
            "verify": lambda: credential_lifecycle.verify_secret(actor, 1),
            "activate": lambda: credential_lifecycle.activate(actor, 1),
            "rollback": lambda: credential_lifecycle.rollback(actor),
            "retire": lambda: credential_lifecycle.retire(actor, 1),
        }
        with pytest.raises(PermissionDenied):
            calls[step]()
        event = AuditEvent.objects.get()
        assert event.action == f"credential.{step}" and event.outcome == "denied"
        assert not Credential.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_secret_values_never_leak(graph_settings, emulator, admin_actor, caplog, capsys):
    """A full rotation, failures included: no secret in logs, audit rows, errors or reprs."""
    caplog.set_level(logging.DEBUG)
    env_secret = emulator.client_secret
    new_value = _new_emulator_secret(emulator)
    wrong_value = "WrongSecretValue-0123456789abcdef"
    texts: list[str] = []

    auth.app_token()
    bad = credential_lifecycle.add_secret(admin_actor, wrong_value, "wrong")
    texts.append(credential_lifecycle.verify_secret(admin_actor, bad.pk).detail)
    good = credential_lifecycle.add_secret(admin_actor, new_value, "right")
    credential_lifecycle.verify_secret(admin_actor, good.pk)
    credential_lifecycle.activate(admin_actor, good.pk)
    graph.get("/users", params={"$top": "1"})
    credential_lifecycle.rollback(admin_actor)
    graph_settings.MICROSOFT_CLIENT_SECRET = wrong_value
    try:
        auth.acquire_with(wrong_value)
    except TokenError as exc:
        texts += [str(exc), repr(exc)]

    for credential in Credential.objects.all():
        texts += [str(credential), repr(credential)]
    texts += [
        json.dumps(list(AuditEvent.objects.values()), default=str),
        json.dumps(list(GraphCall.objects.values()), default=str),
        caplog.text,
        *capsys.readouterr(),
    ]
    admin_fields = set(CredentialAdmin.list_display) | set(DelegatedAccountAdmin.list_display)
    assert not admin_fields & {"secret_encrypted", "token_cache_encrypted"}
    assert "secret_encrypted" in CredentialAdmin.exclude
    blob = "\n".join(texts)
    for value in (env_secret, new_value, wrong_value):
        assert value not in blob
    assert Credential.objects.filter(secret_encrypted__contains=new_value[:10]).count() == 0


def test_the_admin_shows_metadata_only(client, graph_settings, emulator, ada_admin):
    auth.app_token()
    credential = Credential.objects.get()
    client.force_login(ada_admin)
    pages = [
        "/admin/microsoft/credential/",
        f"/admin/microsoft/credential/{credential.pk}/change/",
        "/admin/microsoft/graphcall/",
        "/admin/microsoft/delegatedaccount/",
        "/admin/jobs/workerping/",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert credential.secret_encrypted not in html
        assert emulator.client_secret not in html
    assert credential.fingerprint in client.get(pages[0]).content.decode()
    assert client.get("/admin/microsoft/credential/add/").status_code == 403
