"""Certificate and workload identity credentials: the same add → verify → activate → grace →
retire life cycle as secrets, signed by MSAL against the emulator (which checks client
assertions as Entra ID does), and bad uploads refused with nothing stored."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.management import call_command
from django.core.management.base import CommandError

from integrations import graph
from integrations.graph import auth
from integrations.graph.errors import TokenError
from integrations.graph_emulator.testing import RunningEmulator
from integrations.microsoft import certificates, credential_lifecycle, verify
from integrations.microsoft.credential_lifecycle import CredentialError
from integrations.microsoft.models import Credential
from portal.access.actors import Actor
from portal.alerts import rules
from portal.audit.models import AuditEvent


@pytest.fixture
def admin_actor(ada_admin):
    return Actor(kind="user", name="ada-admin", role="admin", user=ada_admin)


@pytest.fixture(scope="module")
def key_and_cert():
    return certificates.generate("fleet-portal-test", days=90)


def _uploaded(emulator, key_and_cert) -> bytes:
    """The PEM file an operator uploads, its certificate already on the app registration."""
    key_pem, cert_pem = key_and_cert
    emulator.control.add_certificate(emulator.client_id, cert_pem)
    return (key_pem + cert_pem).encode()


def _drop_emulator_secrets(emulator) -> None:
    """Delete every client secret of the app in 'Entra ID': only the certificate can work."""
    for secret in emulator.control.secrets(emulator.client_id):
        emulator.control.remove_secret(emulator.client_id, secret["keyId"])


def _stored_secrets() -> int:
    return (
        Credential.objects.filter(kind=Credential.Kind.SECRET).exclude(secret_encrypted="").count()
    )


@pytest.mark.django_db(transaction=True)
class TestCertificateLifecycle:
    def test_switch_to_a_certificate_and_back_without_a_restart(
        self, graph_settings, emulator, admin_actor, key_and_cert
    ):
        auth.app_token()  # bootstraps the secret from the environment
        secret = Credential.objects.get(state="active")
        added = credential_lifecycle.add_certificate(
            admin_actor, _uploaded(emulator, key_and_cert), display_name="Q3 certificate"
        )
        thumbprint, subject, expires = certificates.describe(key_and_cert[1])
        assert (added.kind, added.state, added.thumbprint) == ("certificate", "pending", thumbprint)
        assert added.subject == subject == "CN=fleet-portal-test"
        assert added.expires_at == expires
        # The key is stored encrypted (never in clear), the certificate in clear.
        assert "PRIVATE KEY" not in added.secret_encrypted
        assert "PRIVATE KEY" in added.secret_value()

        outcome = credential_lifecycle.verify_secret(admin_actor, added.pk)
        assert outcome.ok and "certificate" in outcome.detail and "Mail.Send" in outcome.roles
        credential_lifecycle.activate(admin_actor, added.pk)
        credential_lifecycle.retire(admin_actor, secret.pk)
        assert _stored_secrets() == 0  # no application secret stored while a certificate is active

        _drop_emulator_secrets(emulator)
        assert graph.get("/users", params={"$top": "1"})["value"]

        # And back to a (new) secret the same way, the certificate going into grace.
        value = emulator.control.add_secret(emulator.client_id)["secretText"]
        back = credential_lifecycle.add_secret(admin_actor, value, "back to a secret")
        assert credential_lifecycle.verify_secret(admin_actor, back.pk).ok
        credential_lifecycle.activate(admin_actor, back.pk)
        added.refresh_from_db()
        assert added.state == "grace"
        emulator.control.remove_certificate(emulator.client_id, thumbprint)
        assert graph.get("/users", params={"$top": "1"})["value"]
        audit = AuditEvent.objects.filter(action="credential.add").order_by("id").first()
        assert audit.params["kind"] == "certificate" and audit.params["thumbprint"] == thumbprint
        assert "PRIVATE" not in str(audit.params)

    def test_a_certificate_the_app_does_not_know_stays_pending(
        self, graph_settings, emulator, admin_actor, key_and_cert
    ):
        auth.app_token()
        key_pem, cert_pem = key_and_cert  # not uploaded to the app registration
        added = credential_lifecycle.add_certificate(admin_actor, (key_pem + cert_pem).encode())
        outcome = credential_lifecycle.verify_secret(admin_actor, added.pk)
        assert not outcome.ok and "AADSTS700027" in outcome.detail
        assert "certificate is not uploaded" in outcome.detail
        with pytest.raises(CredentialError, match="Verify"):
            credential_lifecycle.activate(admin_actor, added.pk)
        assert Credential.objects.get(state="active").kind == "secret"

    def test_a_pfx_with_its_password(self, graph_settings, emulator, admin_actor, key_and_cert):
        key_pem, cert_pem = key_and_cert
        emulator.control.add_certificate(emulator.client_id, cert_pem)
        pfx = pkcs12.serialize_key_and_certificates(
            b"fleet",
            serialization.load_pem_private_key(key_pem.encode(), None),
            x509.load_pem_x509_certificate(cert_pem.encode()),
            None,
            serialization.BestAvailableEncryption(b"pfx-password"),
        )
        added = credential_lifecycle.add_certificate(admin_actor, pfx, "pfx-password")
        assert credential_lifecycle.verify_secret(admin_actor, added.pk).ok


def _expired_certificate() -> bytes:
    key_pem, _ = certificates.generate("expired", days=1)
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "expired")])
    past = datetime.now(UTC) - timedelta(days=10)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(past - timedelta(days=30))
        .not_valid_after(past)
        .sign(key, hashes.SHA256())
    )
    return key_pem.encode() + cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.django_db
class TestBadUploads:
    def test_each_is_named_and_nothing_is_stored(self, admin_actor, key_and_cert):
        key_pem, cert_pem = key_and_cert
        other_key, _ = certificates.generate("other", days=30)
        encrypted_key = serialization.load_pem_private_key(key_pem.encode(), None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"right"),
        )
        pfx = pkcs12.serialize_key_and_certificates(
            b"x",
            serialization.load_pem_private_key(key_pem.encode(), None),
            x509.load_pem_x509_certificate(cert_pem.encode()),
            None,
            serialization.BestAvailableEncryption(b"right"),
        )
        cases = [
            (b"", "", "empty"),
            (b"\x00\x01garbage", "", "cannot be opened as PFX"),
            (pfx, "wrong", "password is wrong"),
            (cert_pem.encode(), "", "not its private key"),
            (key_pem.encode(), "", "holds no certificate"),
            ((other_key + cert_pem).encode(), "", "does not belong to the certificate"),
            (encrypted_key + cert_pem.encode(), "", "is encrypted: give its password"),
            (encrypted_key + cert_pem.encode(), "wrong", "password is wrong"),
            (_expired_certificate(), "", "expired on"),
        ]
        for data, password, message in cases:
            with pytest.raises(CredentialError, match=message):
                credential_lifecycle.add_certificate(admin_actor, data, password)
        assert not Credential.objects.exists()
        assert not AuditEvent.objects.filter(action="credential.add").exists()


def _write_token(path: Path, emulator, subject: str) -> None:
    path.write_text(emulator.control.workload_token(subject)["token"])


@pytest.mark.django_db(transaction=True)
class TestWorkloadIdentity:
    SUBJECT = "system:serviceaccount:fleet:fleet-portal"

    def test_the_token_file_is_read_at_each_acquisition(
        self, graph_settings, emulator, admin_actor, tmp_path
    ):
        auth.app_token()
        issued = emulator.control.workload_token(self.SUBJECT)
        emulator.control.add_federated_credential(
            emulator.client_id, issued["issuer"], self.SUBJECT, jwks_uri=issued["jwksUri"]
        )
        token_file = tmp_path / "azure-identity-token"
        graph_settings.MICROSOFT_CLIENT_ASSERTION_FILE = str(token_file)
        with pytest.raises(CredentialError, match="cannot be read"):
            credential_lifecycle.add_workload_identity(admin_actor)
        token_file.write_text("")
        with pytest.raises(CredentialError, match="is empty"):
            credential_lifecycle.add_workload_identity(admin_actor)
        assert Credential.objects.count() == 1

        _write_token(token_file, emulator, self.SUBJECT)
        added = credential_lifecycle.add_workload_identity(admin_actor)
        assert added.kind == "federated" and added.secret_encrypted == ""
        assert credential_lifecycle.verify_secret(admin_actor, added.pk).ok
        previous = credential_lifecycle.activate(admin_actor, added.pk)
        assert previous.state == "active"
        _drop_emulator_secrets(emulator)
        assert graph.get("/users", params={"$top": "1"})["value"]

        # The platform rotates the file; the next acquisition reads it again.
        token_file.write_text("")
        auth.drop_cached_app_token()
        with pytest.raises(TokenError, match="is empty"):
            auth.app_token()
        _write_token(token_file, emulator, self.SUBJECT)
        assert auth.app_token()

    def test_bootstrap_from_the_token_file_stores_no_secret(
        self, graph_settings, emulator, tmp_path
    ):
        issued = emulator.control.workload_token(self.SUBJECT)
        emulator.control.add_federated_credential(
            emulator.client_id, issued["issuer"], self.SUBJECT, jwks_uri=issued["jwksUri"]
        )
        token_file = tmp_path / "token"
        token_file.write_text(issued["token"])
        graph_settings.MICROSOFT_CLIENT_ASSERTION_FILE = str(token_file)
        graph_settings.MICROSOFT_CLIENT_SECRET = ""  # as the workload identity overlay leaves it
        _drop_emulator_secrets(emulator)
        assert auth.app_token()
        active = Credential.objects.get(state="active")
        assert active.kind == "federated" and _stored_secrets() == 0

    def test_an_unregistered_subject_is_explained(self, graph_settings, emulator, tmp_path):
        issued = emulator.control.workload_token("system:serviceaccount:fleet:other")
        emulator.control.add_federated_credential(
            emulator.client_id, issued["issuer"], self.SUBJECT, jwks_uri=issued["jwksUri"]
        )
        token_file = tmp_path / "token"
        token_file.write_text(issued["token"])
        graph_settings.MICROSOFT_CLIENT_ASSERTION_FILE = str(token_file)
        graph_settings.MICROSOFT_CLIENT_SECRET = ""
        with pytest.raises(TokenError, match=r"No federated credential.*AADSTS70021"):
            auth.app_token()


def run(*args: str, stdin: str | None = None) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    extra = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    call_command(*args, stdout=out, stderr=err, **extra)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db(transaction=True)
class TestCommands:
    def test_generate_then_rotate_to_the_certificate(self, graph_settings, emulator, tmp_path):
        auth.app_token()
        path = tmp_path / "portal.pem"
        printed, notes = run("generate_certificate", "--out", str(path), "--days", "30")
        assert printed.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE" not in printed
        assert path.stat().st_mode & 0o777 == 0o600 and "thumbprint" in notes
        emulator.control.add_certificate(emulator.client_id, printed)
        out, _ = run("rotate_client_secret", "--certificate-file", str(path))
        assert "Activated" in out and "thumbprint" in out
        assert Credential.objects.get(state="active").kind == "certificate"
        with pytest.raises(CommandError, match="exists"):
            run("generate_certificate", "--out", str(path))

    def test_rotate_with_a_pfx_and_a_wrong_password(
        self, graph_settings, emulator, tmp_path, key_and_cert
    ):
        auth.app_token()
        key_pem, cert_pem = key_and_cert
        pfx = tmp_path / "portal.pfx"
        pfx.write_bytes(
            pkcs12.serialize_key_and_certificates(
                b"x",
                serialization.load_pem_private_key(key_pem.encode(), None),
                x509.load_pem_x509_certificate(cert_pem.encode()),
                None,
                serialization.BestAvailableEncryption(b"right"),
            )
        )
        args = ("rotate_client_secret", "--certificate-file", str(pfx))
        with pytest.raises(CommandError, match="password is wrong"):
            run(*args, "--certificate-password-stdin", stdin="wrong\n")
        with pytest.raises(CommandError, match="Cannot read the certificate file"):
            run("rotate_client_secret", "--certificate-file", str(tmp_path / "missing.pem"))
        assert Credential.objects.count() == 1
        emulator.control.add_certificate(emulator.client_id, cert_pem)
        out, _ = run(*args, "--certificate-password-stdin", stdin="right\n")
        assert "Activated" in out


@pytest.fixture(scope="module")
def demo_emulator(tmp_path_factory):
    """The emulator as `make run` starts it (demo mode keeps a workload identity token)."""
    with RunningEmulator(
        state_dir=tmp_path_factory.mktemp("demo-emulator"), extra_args=["--demo"]
    ) as emu:
        yield emu


@pytest.mark.django_db(transaction=True)
def test_the_demo_switches_to_workload_identity_with_the_emulator_as_issuer(
    graph_settings, demo_emulator, admin_actor
):
    emu = demo_emulator
    graph_settings.MICROSOFT_AUTHORITY_HOST = emu.authority_host
    graph_settings.MICROSOFT_GRAPH_URL = emu.graph_url
    graph_settings.MICROSOFT_TENANT_ID = emu.tenant_id
    graph_settings.MICROSOFT_CLIENT_ID = emu.client_id
    graph_settings.MICROSOFT_CLIENT_SECRET = emu.client_secret
    graph_settings.MICROSOFT_CA_BUNDLE = emu.ca_path
    graph_settings.MICROSOFT_CLIENT_ASSERTION_FILE = emu.info["workload_token_file"]
    auth.app_token()
    assert Credential.objects.get(state="active").kind == "secret"  # the secret bootstraps
    added = credential_lifecycle.add_workload_identity(admin_actor)
    assert credential_lifecycle.verify_secret(admin_actor, added.pk).ok
    secret = Credential.objects.get(state="active")
    credential_lifecycle.activate(admin_actor, added.pk)
    credential_lifecycle.retire(admin_actor, secret.pk)
    _drop_emulator_secrets(emu)
    assert graph.get("/users", params={"$top": "1"})["value"]
    assert _stored_secrets() == 0


@pytest.mark.django_db
def test_a_certificate_near_its_expiry_fires_the_alert_and_verify_shows_it(admin_actor):
    key_pem, cert_pem = certificates.generate("short-lived", days=5)
    added = credential_lifecycle.add_certificate(admin_actor, (key_pem + cert_pem).encode())
    Credential.objects.filter(pk=added.pk).update(state="active", last_verified_at=added.created_at)
    verdict = next(rule for rule in rules.RULES if rule.name == "secret_expiring").evaluate()
    assert verdict.firing and "credential expires in 5.0 days" in verdict.message
    check = verify.check_secret_expiry(verify._Context(timeout=1))
    assert check.ok and f"certificate {added.thumbprint}" in check.detail
    assert "warning: rotate it soon" in check.detail
