"""Process behaviour: persisted identity + CA, SIGTERM shutdown, demo traffic, HTTPS
notification endpoints."""

from __future__ import annotations

import json
import ssl
import time
from datetime import UTC, datetime, timedelta

import trustme

from integrations.graph_emulator.testing import RunningEmulator

from .conftest import MARIA, Graph, Receiver


def test_restart_keeps_identity_and_ca(tmp_path):
    with RunningEmulator(state_dir=tmp_path) as first:
        info1 = dict(first.info)
        ca1 = (tmp_path / "ca.pem").read_text()
        assert first.proc is not None
    assert first.proc.returncode == 0  # clean exit on SIGTERM
    assert "graph emulator stopped" in (tmp_path / "emulator.log").read_text()
    with RunningEmulator(state_dir=tmp_path) as second:
        for key in ("tenant_id", "client_id", "client_secret", "control_token"):
            assert second.info[key] == info1[key]
        assert (tmp_path / "ca.pem").read_text() == ca1
        data = json.loads((tmp_path / "demo-tenant.json").read_text())
        assert data["graph_url"] == f"{data['authority_host']}/v1.0"
        assert data["ca_bundle"] == str((tmp_path / "ca.pem").resolve())
        assert data["service_account_upn"].startswith("fleet.bot@")
        assert second.control.health()["status"] == "ok"


def test_demo_mode_generates_traffic(tmp_path):
    with RunningEmulator(
        state_dir=tmp_path, demo=True, config={"demo": {"interval_s": 0.2}}
    ) as emu:
        before = emu.control.health()["stats"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = emu.control.health()["stats"]
            if now["seq"] >= before["seq"] + 3:
                break
            time.sleep(0.2)
        assert now["seq"] >= before["seq"] + 3


def test_https_notification_url_is_verified(emulator):
    emulator.control.allow_local_receivers()  # the receiver listens on 127.0.0.1
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    receiver = Receiver(ssl_context=ctx)
    try:
        graph = Graph(emulator)
        body = {
            "changeType": "created",
            "notificationUrl": receiver.url,
            "resource": f"users/{graph.user_id(MARIA)}/messages",
            "expirationDateTime": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
            "clientState": "tls",
        }
        r = graph.post("subscriptions", body)
        assert r.status_code == 400  # unknown CA -> validation request fails
        ca_file = emulator.state_dir / "receiver-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        emulator.control.configure(subscriptions={"ca_bundle": str(ca_file)})
        r = graph.post("subscriptions", body)
        assert r.status_code == 201, r.text
        emulator.control.create_mail(MARIA, subject="over TLS")
        assert receiver.wait_for(lambda: receiver.items())[0]["clientState"] == "tls"
    finally:
        receiver.close()
