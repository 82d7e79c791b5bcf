"""runportal writes the emulator's tenant into the .env the portal reads, and only there."""

from __future__ import annotations

import json

from integrations.microsoft.messaging.service import known_sender
from portal.management.commands.runportal import Command

TENANT = {
    "tenant_id": "t",
    "client_id": "c",
    "client_secret": "s",
    "authority_host": "https://127.0.0.1:1",
    "graph_url": "https://127.0.0.1:1/v1.0",
    "ca_bundle": "/tmp/ca.pem",
}


def test_it_appends_the_missing_keys_to_the_dotenv_file(settings, tmp_path):
    tenant = tmp_path / "demo-tenant.json"
    tenant.write_text(json.dumps(TENANT))
    settings.DOTENV_FILE = tmp_path / ".env"
    settings.DOTENV_FILE.write_text("MICROSOFT_TENANT_ID=mine\n")
    Command()._add_emulator_to_env(tenant)
    text = settings.DOTENV_FILE.read_text()
    assert "MICROSOFT_TENANT_ID=mine" in text and "MICROSOFT_TENANT_ID=t" not in text
    assert "MICROSOFT_CLIENT_ID=c" in text


def test_it_writes_no_dotenv_when_the_portal_ignores_it(settings, tmp_path):
    """PORTAL_IGNORE_DOTENV (the benchmarks): a .env in the checkout would be read by no one
    in this run and would change the next `make run`."""
    tenant = tmp_path / "demo-tenant.json"
    tenant.write_text(json.dumps(TENANT))
    settings.DOTENV_FILE = None
    settings.BASE_DIR = tmp_path
    Command()._add_emulator_to_env(tenant)
    assert not (tmp_path / ".env").exists()


def test_the_demo_service_account_is_a_mailbox_the_send_api_sends_from(settings, tmp_path):
    """POST /api/messages from the demo's service account was refused ("not a mailbox this
    portal sends from"): it is neither monitored nor listed."""
    tenant = tmp_path / "demo-tenant.json"
    tenant.write_text(json.dumps({**TENANT, "service_account_upn": "svc-fleet@demo.example"}))
    settings.DOTENV_FILE = tmp_path / ".env"
    Command()._add_emulator_to_env(tenant)
    written = dict(
        line.split("=", 1) for line in settings.DOTENV_FILE.read_text().splitlines() if "=" in line
    )
    assert written["MESSAGING_SENDER_MAILBOXES"] == "svc-fleet@demo.example"
    settings.MESSAGING_SENDER_MAILBOXES = [written["MESSAGING_SENDER_MAILBOXES"]]
    assert known_sender("SVC-fleet@demo.example")
