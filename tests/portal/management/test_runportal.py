"""runportal registers on the demo app exactly the redirect URIs the portal sends."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from integrations.microsoft import teams_sender
from portal.access import sso
from portal.management.commands.runportal import demo_redirect_uris, startup_box


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_demo_registers_what_the_portal_sends(settings, host):
    settings.SSO_REDIRECT_URI = ""
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    request = RequestFactory().get("/", HTTP_HOST=f"{host}:18555")
    registered = demo_redirect_uris(18555)
    # Staff sign-in and the Teams sender's sign-in, each as the portal builds it.
    assert sso.redirect_uri(request) in registered
    assert teams_sender.delegated_redirect_uri(request) in registered
    assert f"http://{host}:18555/login/microsoft/callback" in registered
    assert f"http://{host}:18555/credentials/teams-sender/callback" in registered


def test_a_configured_sso_redirect_uri_is_registered_as_it_is(settings):
    settings.SSO_REDIRECT_URI = "https://portal.example.com/login/microsoft/callback"
    registered = demo_redirect_uris(8000)
    assert registered[0] == "https://portal.example.com/login/microsoft/callback"
    assert "http://127.0.0.1:8000/login/microsoft/callback" not in registered
    assert "http://127.0.0.1:8000/credentials/teams-sender/callback" in registered


def test_the_start_up_box_says_where_as_whom_and_how_to_stop(settings, tmp_path):
    settings.EMULATOR_STATE_DIR = tmp_path
    (tmp_path / "demo-passwords.json").write_text('{"demo-admin": "pw-a", "demo-viewer": "pw-v"}')
    tenant = tmp_path / "demo-tenant.json"
    tenant.write_text('{"sign_in_staff": {"maria.kowalski@fleetdemo.example": "admin"}}')
    box = startup_box(8123, tenant)
    assert "http://127.0.0.1:8123/" in box
    assert "demo-admin      pw-a" in box and "demo-viewer     pw-v" in box
    assert "maria.kowalski@fleetdemo.example" in box and "admin" in box
    assert "portal_user set-password NAME" in box and "Ctrl-C" in box
    lines = box.strip().splitlines()
    assert lines[0].startswith("┌") and lines[-1].startswith("└")
    assert len({len(line) for line in lines}) == 1  # a closed box
    # A real tenant: no demo staff, and no demo passwords once there are none.
    (tmp_path / "demo-passwords.json").unlink()
    plain = startup_box(8000, None)
    assert "demo-" not in plain and "Sign in with Microsoft" not in plain
