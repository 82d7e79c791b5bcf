"""App-only tokens: the credential store bootstraps, MSAL caches, and every refusal says why."""

from __future__ import annotations

import pytest

from integrations import graph
from integrations.graph import auth
from integrations.graph.errors import TokenError
from integrations.microsoft.models import Credential
from portal.audit.models import AuditEvent
from tests.integrations.graph.conftest import token_requests

pytestmark = pytest.mark.django_db


class TestAppTokens:
    def test_the_env_secret_bootstraps_the_store(self, graph_settings, emulator):
        token = auth.app_token()
        claims = auth.token_claims(token)
        assert "User.Read.All" in claims["roles"]
        credential = Credential.objects.get()
        assert credential.state == Credential.State.ACTIVE
        assert credential.secret_value() == emulator.client_secret
        event = AuditEvent.objects.get(action="credential.bootstrap")
        assert event.actor_type == "system"
        assert emulator.client_secret not in str(event.params)

    def test_the_token_is_cached_per_process(self, graph_settings, emulator):
        first = auth.app_token()
        assert auth.app_token() == first
        assert len(token_requests(emulator)) == 1
        auth.invalidate()
        auth.app_token()
        assert len(token_requests(emulator)) == 2

    def test_a_wrong_secret_says_so_without_the_secret(self, graph_settings, emulator):
        graph_settings.MICROSOFT_CLIENT_SECRET = "definitely-wrong-secret-value"
        with pytest.raises(TokenError) as caught:
            auth.app_token()
        assert caught.value.aadsts == 7000215 and not caught.value.transient
        assert "rejected" in str(caught.value)
        assert "definitely-wrong" not in str(caught.value)

    def test_an_expired_secret_says_so(self, graph_settings, emulator):
        key_id = emulator.control.secrets(emulator.client_id)[0]["keyId"]
        emulator.control.expire_secret(emulator.client_id, key_id)
        with pytest.raises(TokenError, match="expired") as caught:
            auth.app_token()
        assert caught.value.aadsts == 7000222

    def test_an_unknown_app_says_so(self, graph_settings, emulator):
        graph_settings.MICROSOFT_CLIENT_ID = "11111111-2222-3333-4444-555555555555"
        with pytest.raises(TokenError, match="not found in tenant") as caught:
            auth.app_token()
        assert caught.value.aadsts == 700016

    def test_an_unknown_tenant_says_so(self, graph_settings, emulator):
        graph_settings.MICROSOFT_TENANT_ID = "99999999-0000-0000-0000-000000000000"
        with pytest.raises(TokenError, match="MICROSOFT_TENANT_ID") as caught:
            auth.app_token()
        assert caught.value.aadsts == 90002

    def test_identity_platform_trouble_is_transient(self, graph_settings, emulator):
        emulator.control.inject_fault(path="/oauth2/v2.0/token", kind="503", count=1)
        with pytest.raises(TokenError) as caught:
            auth.app_token()
        assert caught.value.transient

    def test_an_unreachable_identity_platform_is_transient(self, graph_settings):
        graph_settings.MICROSOFT_AUTHORITY_HOST = "https://127.0.0.1:9"
        with pytest.raises(TokenError, match="Could not reach") as caught:
            auth.app_token()
        assert caught.value.transient

    def test_http_authorities_are_refused(self, graph_settings):
        graph_settings.MICROSOFT_AUTHORITY_HOST = "http://127.0.0.1:9"
        with pytest.raises(TokenError, match="https"):
            auth.app_token()

    def test_the_env_ca_bundle_does_not_override_ours(self, graph_settings, emulator, monkeypatch):
        # The machine's bundle lacks the emulator CA; with trust_env it would win.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
        monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
        assert auth.app_token()
        assert graph.get("/users", params={"$top": "1"})["value"]

    def test_no_secret_anywhere_is_a_clear_error(self, graph_settings):
        graph_settings.MICROSOFT_CLIENT_SECRET = ""
        with pytest.raises(TokenError, match="No active credential"):
            auth.app_token()
