"""Signing staff in through the emulator: settings, and the Django test client's way
through Microsoft's (the emulator's) sign-in page."""

from __future__ import annotations

import re
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from integrations.graph_emulator.pytest_plugin import emulator, graph_emulator  # noqa: F401
from integrations.graph_emulator.testing import RunningEmulator
from portal.access import sso as sso_module

DOMAIN = "fleetdemo.onmicrosoft.com"
# The emulator's demo staff: one per portal role (integrations/graph_emulator/sign_in.py).
ENTRA_STAFF = {
    "admin": f"maria.kowalski@{DOMAIN}",
    "operator": f"hannah.lindqvist@{DOMAIN}",
    "support": f"priya.raman@{DOMAIN}",
    "viewer": f"sofia.marchetti@{DOMAIN}",
}
NO_ROLE = f"erik.johansson@{DOMAIN}"


def configure(settings: Any, emu: RunningEmulator, base_url: str) -> Any:
    sso_module.forget_clients()
    settings.SSO_ENABLED = True
    settings.SSO_TENANT_ID = emu.tenant_id
    settings.SSO_AUTHORITY_HOST = emu.authority_host
    settings.SSO_CLIENT_ID = emu.client_id
    settings.SSO_CLIENT_SECRET = emu.client_secret
    settings.SSO_REDIRECT_URI = ""
    settings.MICROSOFT_CA_BUNDLE = emu.ca_path
    emu.control._call(
        "PUT",
        f"apps/{emu.client_id}/redirect-uris",
        {"redirect_uris": [f"{base_url}/login/microsoft/callback"]},
    )
    return settings


@pytest.fixture
def sso_settings(settings: Any, emulator: RunningEmulator) -> Any:
    yield configure(settings, emulator, "http://testserver")
    sso_module.forget_clients()


def pick_account(emu: RunningEmulator, authorize_url: str, upn: str) -> str:
    """What the person's browser does on the emulator's sign-in page: click their name.
    Returns where Microsoft redirects back to (the portal's callback with code + state)."""
    session = emu.session()
    page = session.get(authorize_url, timeout=10)
    assert page.status_code == 200, page.text
    links = [
        unescape(h)
        for h in re.findall(r'href="([^"]+)"', page.text)
        if parse_qs(urlsplit(unescape(h)).query).get("login_hint") == [upn]
    ]
    assert links, f"{upn} is not on the sign-in page"
    answer = session.get(emu.base_url + links[0], allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def sign_in(client: Any, emu: RunningEmulator, upn: str, next_url: str = "") -> Any:
    """Run the whole sign-in with the Django test client; returns the callback's response."""
    start = client.get("/login/microsoft/" + (f"?next={next_url}" if next_url else ""))
    assert start.status_code == 302, start.content
    back = urlsplit(pick_account(emu, start["Location"], upn))
    return client.get(f"{back.path}?{back.query}")
