from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from integrations.graph import auth
from integrations.microsoft.models import Credential
from portal.audit.models import AuditEvent
from tests.conftest import free_port

pytestmark = pytest.mark.django_db


def run(*args, stdin=None):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **({"stdin": stdin} if stdin else {}))
    return out.getvalue()


class TestVerifyIntegration:
    def test_it_prints_a_checklist_and_exits_0(self, graph_settings, webhook_receiver, q_sync):
        graph_settings.PUBLIC_BASE_URL = webhook_receiver
        output = run("verify_integration", "--timeout", "5")
        lines = output.strip().splitlines()
        assert len(lines) == 13 and all(line.startswith("✔") for line in lines[:12])
        assert lines[-1] == "All 12 checks passed."
        event = AuditEvent.objects.get(action="integration.verify")
        assert event.outcome == "success" and event.actor_name.startswith("cli:")

    def test_it_exits_1_with_a_line_per_failure(self, graph_settings, q_sync):
        graph_settings.PUBLIC_BASE_URL = f"http://127.0.0.1:{free_port()}"
        out = io.StringIO()
        with pytest.raises(CommandError) as caught:
            call_command("verify_integration", "--timeout", "2", stdout=out)
        assert caught.value.returncode == 1
        assert "1 of 12 checks failed: Webhook endpoint" in str(caught.value)
        assert "✘ Webhook endpoint: webhook receiver not reachable" in out.getvalue()
        assert AuditEvent.objects.get(action="integration.verify").outcome == "failure"

    def test_json_output(self, graph_settings, q_sync):
        graph_settings.MICROSOFT_CLIENT_SECRET = "bad-secret"
        graph_settings.PUBLIC_BASE_URL = f"http://127.0.0.1:{free_port()}"
        out = io.StringIO()
        with pytest.raises(CommandError):
            call_command("verify_integration", "--json", "--timeout", "2", stdout=out)
        report = json.loads(out.getvalue())
        assert report["ok"] is False
        failed = {c["name"] for c in report["checks"] if not c["ok"]}
        assert failed == {
            "Token acquisition",
            "Graph reachable",
            "Required permissions",
            "Teams chat read",
            "Webhook endpoint",
        }

    def test_the_worker_check_fails_without_a_worker(self, graph_settings, webhook_receiver):
        graph_settings.PUBLIC_BASE_URL = webhook_receiver
        out = io.StringIO()
        with pytest.raises(CommandError, match="Worker alive"):
            call_command("verify_integration", "--timeout", "1", stdout=out)


@pytest.mark.django_db(transaction=True)
class TestRotateClientSecret:
    def test_add_verify_activate(self, graph_settings, emulator):
        auth.app_token()
        new = emulator.control.add_secret(emulator.client_id)["secretText"]
        output = run(
            "rotate_client_secret",
            "--display-name",
            "2026 Q4",
            "--expires-days",
            "180",
            stdin=io.StringIO(new + "\n"),
        )
        assert "1. Added" in output and "2. Verified" in output and "3. Activated" in output
        assert new not in output
        active = Credential.objects.get(state="active")
        assert active.display_name == "2026 Q4" and active.expires_at
        assert Credential.objects.get(state="grace")

        listing = run("rotate_client_secret", "--list")
        assert active.fingerprint in listing and new not in listing

        output = run("rotate_client_secret", "--rollback")
        assert "Rolled back" in output
        assert Credential.objects.get(state="active").display_name.startswith("From")
        pending = Credential.objects.get(state="pending")
        assert "Retired" in run("rotate_client_secret", "--retire", str(pending.pk))

    def test_a_failed_verification_exits_non_zero_and_keeps_the_pending_row(
        self, graph_settings, emulator
    ):
        auth.app_token()
        with pytest.raises(CommandError, match=r"Verification failed.*AADSTS7000215"):
            run("rotate_client_secret", stdin=io.StringIO("typo-secret\n"))
        pending = Credential.objects.get(state="pending")
        assert "AADSTS7000215" in pending.last_error
        assert Credential.objects.get(state="active").display_name.startswith("From")

    def test_no_activate(self, graph_settings, emulator):
        auth.app_token()
        new = emulator.control.add_secret(emulator.client_id)["secretText"]
        output = run("rotate_client_secret", "--no-activate", stdin=io.StringIO(new))
        assert "Not activated" in output
        assert Credential.objects.get(state="pending").is_verified

    def test_empty_stdin_is_refused(self, graph_settings):
        with pytest.raises(CommandError, match="No secret on stdin"):
            run("rotate_client_secret", stdin=io.StringIO(""))

    def test_a_terminal_is_prompted_without_echo(self, graph_settings, emulator, monkeypatch):
        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        prompts = []
        monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or "x1")
        with pytest.raises(CommandError, match="Verification failed"):
            run("rotate_client_secret", stdin=Terminal("never read"))
        assert prompts and "hidden" in prompts[0]

    def test_rollback_without_grace_is_a_clear_error(self, graph_settings):
        with pytest.raises(CommandError, match="no credential in its grace"):
            run("rotate_client_secret", "--rollback")
