"""Credentials belong to one tenant and client; connect_tenant switches between two tenants
(two emulator instances play them) and afterwards nothing reaches the old one."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.core.management.base import CommandError

from integrations.graph import auth
from integrations.graph.errors import TokenError
from integrations.graph_emulator.testing import RunningEmulator
from integrations.microsoft import certificates, credential_lifecycle, sync, tenant
from integrations.microsoft.models import (
    Credential,
    DelegatedAccount,
    MonitoredUser,
    Subscription,
    SyncedItem,
    SyncState,
)
from integrations.microsoft.verify import run_checks
from portal.access.actors import Actor
from portal.audit.models import AuditEvent


@pytest.fixture(scope="module")
def other_tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    """A second tenant: another emulator process with other ids (another seed)."""
    with RunningEmulator(
        state_dir=tmp_path_factory.mktemp("other-tenant"), extra_args=["--seed", "7"]
    ) as emu:
        yield emu


@pytest.fixture
def b(other_tenant: RunningEmulator) -> RunningEmulator:
    other_tenant.reset()
    other_tenant.control.allow_local_receivers()  # the portal's live_server after the switch
    return other_tenant


def _point_settings_at(settings, emu: RunningEmulator) -> None:
    """What the README's old advice did: change the variables, keep the credential store."""
    settings.MICROSOFT_AUTHORITY_HOST = emu.authority_host
    settings.MICROSOFT_GRAPH_URL = emu.graph_url
    settings.MICROSOFT_TENANT_ID = emu.tenant_id
    settings.MICROSOFT_CLIENT_ID = emu.client_id
    settings.MICROSOFT_CLIENT_SECRET = emu.client_secret
    settings.MICROSOFT_CA_BUNDLE = emu.ca_path


def _log_size(emu: RunningEmulator) -> int:
    return len(emu.control.requests_log())


@pytest.mark.django_db
class TestCredentialBelongsToItsApp:
    def test_the_two_emulators_are_different_tenants(self, emulator, b):
        assert emulator.tenant_id != b.tenant_id and emulator.client_id != b.client_id

    def test_stored_credentials_record_tenant_and_client(self, graph_settings, emulator, ada_admin):
        auth.app_token()  # bootstraps from MICROSOFT_CLIENT_SECRET
        boot = Credential.objects.get(state="active")
        assert (boot.tenant_id, boot.client_id) == (emulator.tenant_id, emulator.client_id)
        actor = Actor(kind="user", name="ada-admin", role="admin", user=ada_admin)
        added = credential_lifecycle.add_secret(actor, "another-secret-value", "second")
        assert (added.tenant_id, added.client_id) == (emulator.tenant_id, emulator.client_id)
        event = AuditEvent.objects.get(action="credential.add")
        assert event.params["tenant_id"] == emulator.tenant_id

    def test_a_secret_of_another_tenant_stops_token_acquisition_without_a_request(
        self, graph_settings, emulator, b
    ):
        auth.app_token()
        _point_settings_at(graph_settings, b)  # the store still holds the demo's secret
        before_a, before_b = _log_size(emulator), _log_size(b)
        expected = (
            f"the stored secret is for tenant {emulator.tenant_id} / client "
            f"{emulator.client_id}; run connect_tenant"
        )
        with pytest.raises(TokenError, match=expected):
            auth.app_token()
        assert _log_size(emulator) == before_a and _log_size(b) == before_b

    def test_verify_and_the_dashboard_say_so(self, graph_settings, emulator, b, client, ada_admin):
        auth.app_token()
        _point_settings_at(graph_settings, b)
        results = {r.name: r for r in run_checks(timeout=3)}
        for name in ("Configuration", "Token acquisition"):
            assert not results[name].ok
            assert "run connect_tenant" in results[name].detail
        client.force_login(ada_admin)
        page = client.get("/").content.decode()
        assert f"the stored secret is for tenant {emulator.tenant_id}" in page

    def test_a_pending_secret_of_another_tenant_fails_verification(
        self, graph_settings, emulator, b, ada_admin
    ):
        actor = Actor(kind="user", name="ada-admin", role="admin", user=ada_admin)
        added = credential_lifecycle.add_secret(
            actor, emulator.control.add_secret(emulator.client_id)["secretText"], "for A"
        )
        _point_settings_at(graph_settings, b)
        before = _log_size(emulator)
        outcome = credential_lifecycle.verify_secret(actor, added.pk)
        assert not outcome.ok and "run connect_tenant" in outcome.detail
        assert _log_size(emulator) == before


def _dotenv(tmp_path: Path, emu: RunningEmulator) -> Path:
    """The demo's .env, as `make run` writes it."""
    path = tmp_path / ".env"
    values = {
        "MICROSOFT_TENANT_ID": emu.tenant_id,
        "MICROSOFT_CLIENT_ID": emu.client_id,
        "MICROSOFT_CLIENT_SECRET": emu.client_secret,
        "MICROSOFT_AUTHORITY_HOST": emu.authority_host,
        "MICROSOFT_GRAPH_URL": emu.graph_url,
        "MICROSOFT_CA_BUNDLE": emu.ca_path,
    }
    path.write_text("DEBUG=true\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def connect(emu: RunningEmulator, tmp_path: Path, *extra: str, secret: str | None = None) -> str:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text((secret or emu.client_secret) + "\n")
    out = io.StringIO()
    call_command(
        "connect_tenant",
        "--tenant-id",
        emu.tenant_id,
        "--client-id",
        emu.client_id,
        "--client-secret-file",
        str(secret_file),
        "--authority-host",
        emu.authority_host,
        "--graph-url",
        emu.graph_url,
        "--ca-bundle",
        emu.ca_path,
        *extra,
        stdout=out,
        stderr=io.StringIO(),
    )
    return out.getvalue()


@pytest.fixture
def demo_portal(webhook_settings, monitored, emulator, tmp_path, drain):
    """The demo on tenant A: subscriptions, a delta link, synced items, a Teams sender."""
    webhook_settings.DOTENV_FILE = _dotenv(tmp_path, emulator)
    call_command("setup_webhooks", stdout=io.StringIO())
    state = sync.ensure_state(monitored.pk, "messages")
    sync.run(state.pk, trigger="test")
    state.refresh_from_db()
    assert state.delta_link.startswith(emulator.graph_url)
    assert SyncedItem.objects.exists()
    DelegatedAccount.objects.create(upn="svc@a.example", connected_by="test")
    return webhook_settings


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("q_sync")
class TestConnectTenant:
    def test_it_switches_and_afterwards_only_the_new_tenant_is_asked(
        self, demo_portal, monitored, emulator, b, tmp_path
    ):
        assert len(emulator.control.subscriptions()) == 2
        old = Credential.objects.get(state="active")
        output = connect(b, tmp_path, "--keep-monitored-users", "--yes")
        assert "Changes:" in output and f"Connected to tenant {b.tenant_id}" in output
        assert b.client_secret not in output
        # The old tenant's subscriptions were deleted there and here.
        assert emulator.control.subscriptions() == []
        assert not Subscription.objects.exists()
        # The new secret is the active credential of the new app; the old one is retired.
        active = Credential.objects.get(state="active")
        assert (active.tenant_id, active.client_id) == (b.tenant_id, b.client_id)
        old.refresh_from_db()
        assert old.state == "retired" and old.secret_encrypted == ""
        # The monitored user was re-resolved by UPN in the new tenant.
        user = MonitoredUser.objects.get()
        b_user = next(u for u in b.control.tenant()["users"] if u["userPrincipalName"] == user.upn)
        assert user.graph_id == b_user["id"] != monitored.graph_id
        state = SyncState.objects.get(monitored_user=user, kind="messages")
        assert state.delta_link == "" and state.next_link == "" and state.reset_requested
        assert SyncedItem.objects.exists()  # kept (--yes keeps them)
        assert not DelegatedAccount.objects.filter(disconnected_at__isnull=True).exists()
        # .env now names the new tenant; the old secret is gone from it.
        env = (tmp_path / ".env").read_text()
        assert f"MICROSOFT_TENANT_ID={b.tenant_id}" in env
        assert f"MICROSOFT_AUTHORITY_HOST={b.authority_host}" in env
        assert emulator.client_secret not in env and b.client_secret not in env
        # One audit event, without the secret.
        event = AuditEvent.objects.get(action="tenant.connect")
        assert event.params["to"]["tenant_id"] == b.tenant_id
        assert event.params["subscriptions_deleted"] == 2
        assert b.client_secret not in str(event.params)
        # The checklist ran against the new tenant.
        assert "Integration checklist against the new tenant" in output
        assert f"tenant {b.tenant_id}" in output
        # From now on the old authority and Graph get nothing.
        mark = _log_size(emulator)
        sync.run(state.pk, trigger="test")
        call_command("setup_webhooks", stdout=io.StringIO())
        run_checks(timeout=5)
        assert _log_size(emulator) == mark
        assert len(b.control.subscriptions()) == 2
        state.refresh_from_db()
        assert state.delta_link.startswith(b.graph_url)

    def test_without_keep_the_monitored_users_are_dropped(self, demo_portal, b, tmp_path):
        connect(b, tmp_path, "--yes")
        assert not MonitoredUser.objects.exists() and not SyncState.objects.exists()

    def test_a_token_failure_changes_nothing(self, demo_portal, emulator, b, tmp_path):
        env_before = (tmp_path / ".env").read_text()
        with pytest.raises(
            CommandError,
            match="No token with the new values, so nothing was "
            "changed: The client secret was rejected",
        ):
            connect(b, tmp_path, "--yes", secret="not-the-secret")
        assert (tmp_path / ".env").read_text() == env_before
        assert Subscription.objects.count() == 2 and len(emulator.control.subscriptions()) == 2
        assert Credential.objects.get(state="active").tenant_id == emulator.tenant_id
        assert not AuditEvent.objects.filter(action="tenant.connect").exists()

    def test_dry_run_shows_the_changes_and_changes_nothing(
        self, demo_portal, emulator, b, tmp_path
    ):
        output = connect(b, tmp_path, "--dry-run", "--keep-monitored-users")
        assert "Subscriptions: 2 deleted" in output and "re-resolved" in output
        assert "Dry run: nothing was changed." in output
        assert Subscription.objects.count() == 2
        assert Credential.objects.get(state="active").tenant_id == emulator.tenant_id
        assert f"MICROSOFT_TENANT_ID={emulator.tenant_id}" in (tmp_path / ".env").read_text()

    def test_without_a_dotenv_it_prints_the_variables(self, graph_settings, b, tmp_path):
        graph_settings.DOTENV_FILE = None  # settings come from the environment (Kubernetes)
        output = connect(b, tmp_path, "--yes", "--public-base-url", "https://portal.example.com")
        assert "Set these environment variables" in output
        assert f"MICROSOFT_TENANT_ID={b.tenant_id}" in output
        assert "PUBLIC_BASE_URL=https://portal.example.com" in output
        assert b.client_secret not in output

    def test_it_refuses_without_a_terminal_unless_told(self, graph_settings, b, tmp_path):
        with pytest.raises(CommandError, match="pass --yes"):
            connect(b, tmp_path)

    @pytest.mark.parametrize(
        "args, message",
        [
            (["--authority-host", "http://login.example.com"], "authority host must be an https"),
            (["--ca-bundle", "/nonexistent/ca.pem"], "is not a readable file"),
        ],
    )
    def test_bad_input_is_refused_with_a_reason(self, graph_settings, b, tmp_path, args, message):
        with pytest.raises(CommandError, match=message):
            connect(b, tmp_path, "--yes", *args)

    def test_only_admins_may_connect(self, graph_settings, b, otto_operator):
        actor = Actor(kind="user", name="otto-operator", role="operator", user=otto_operator)
        target = tenant.clean_target(
            b.tenant_id,
            b.client_id,
            authority_host=b.authority_host,
            graph_url=b.graph_url,
            ca_bundle=b.ca_path,
        )
        with pytest.raises(PermissionDenied):
            tenant.prepare(actor, target, b.client_secret)
        assert AuditEvent.objects.filter(action="tenant.connect", outcome="denied").exists()


@pytest.mark.django_db(transaction=True)
class TestConnectWithACertificate:
    def _args(self, emu: RunningEmulator, path: Path) -> list[str]:
        return [
            "connect_tenant",
            "--tenant-id",
            emu.tenant_id,
            "--client-id",
            emu.client_id,
            "--certificate-file",
            str(path),
            "--authority-host",
            emu.authority_host,
            "--graph-url",
            emu.graph_url,
            "--ca-bundle",
            emu.ca_path,
            "--yes",
        ]

    def test_it_connects_verify_passes_and_no_secret_is_stored(self, graph_settings, b, tmp_path):
        graph_settings.DOTENV_FILE = None
        auth.app_token()  # the demo's secret is active for tenant A
        key_pem, cert_pem = certificates.generate("tenant-b", days=60)
        b.control.add_certificate(b.client_id, cert_pem)
        for secret in b.control.secrets(b.client_id):
            b.control.remove_secret(b.client_id, secret["keyId"])
        path = tmp_path / "b.pem"
        path.write_text(key_pem + cert_pem)
        out = io.StringIO()
        call_command(*self._args(b, path), stdout=out, stderr=io.StringIO())
        output = out.getvalue()
        assert f"Connected to tenant {b.tenant_id}" in output
        assert "the certificate CN=tenant-b (thumbprint" in output
        assert "✔ Token acquisition" in output and "PRIVATE" not in output
        active = Credential.objects.get(state="active")
        assert (active.kind, active.tenant_id) == ("certificate", b.tenant_id)
        assert not Credential.objects.exclude(secret_encrypted="").exclude(pk=active.pk).exists()
        checks = {c.name: c for c in run_checks(timeout=5)}
        assert checks["Token acquisition"].ok, checks["Token acquisition"].detail

    def test_a_certificate_the_app_lacks_changes_nothing(self, graph_settings, b, tmp_path):
        auth.app_token()
        key_pem, cert_pem = certificates.generate("not-uploaded", days=60)
        path = tmp_path / "b.pem"
        path.write_text(key_pem + cert_pem)
        with pytest.raises(CommandError, match="AADSTS700027"):
            call_command(*self._args(b, path), stdout=io.StringIO(), stderr=io.StringIO())
        path.write_text(cert_pem)
        with pytest.raises(CommandError, match="not its private key"):
            call_command(*self._args(b, path), stdout=io.StringIO(), stderr=io.StringIO())
        assert Credential.objects.get(state="active").kind == "secret"
        assert not AuditEvent.objects.filter(action="tenant.connect").exists()
