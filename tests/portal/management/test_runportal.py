"""runportal registers on the demo app exactly the redirect URIs the portal sends."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from integrations.microsoft import teams_sender
from portal.access import sso
from portal.management.commands.runportal import demo_redirect_uris


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
