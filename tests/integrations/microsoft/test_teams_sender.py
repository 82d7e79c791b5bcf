"""The delegated Teams sender: connect, refresh, disconnect, and what app-only cannot do."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import PermissionDenied

from integrations import graph
from integrations.graph import auth
from integrations.graph.errors import GraphPermissionDenied, Permanent, TokenError
from integrations.microsoft import teams_sender
from integrations.microsoft.models import DelegatedAccount
from portal.access.actors import Actor
from portal.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


class TestDelegatedSender:
    def _connect(self, emulator, actor):
        redirect_uri = "http://127.0.0.1:8000/credentials/teams-sender/callback"
        emulator.control.set_redirect_uris(emulator.client_id, [redirect_uri])
        auth_url, flow = teams_sender.start_delegated_connect(
            redirect_uri, login_hint=emulator.service_account_upn, prompt=None
        )
        assert auth_url.startswith(emulator.authority)
        # The admin's browser: the emulator signs the service account in and redirects back.
        response = emulator.session().get(auth_url, allow_redirects=False, timeout=10)
        assert response.status_code in (302, 303)
        location = urlsplit(response.headers["Location"])
        assert location.path.endswith("/teams-sender/callback")
        params = {k: v[0] for k, v in parse_qs(location.query).items()}
        return teams_sender.complete_delegated_connect(actor, flow, params)

    def test_connect_stores_an_encrypted_cache_and_sends(self, graph_settings, emulator, ada_admin):
        account = self._connect(
            emulator, Actor(kind="user", name="ada-admin", role="admin", user=ada_admin)
        )
        assert account.upn == emulator.service_account_upn
        assert "refresh_token" not in account.token_cache_encrypted.lower()
        event = AuditEvent.objects.get(action="teams_sender.connect")
        assert event.outcome == "success" and event.params["upn"] == account.upn

        token = teams_sender.delegated_token()
        assert auth.token_claims(token).get("scp")
        tenant = emulator.control.tenant()
        bot = next(
            u["id"]
            for u in tenant["users"]
            if u["userPrincipalName"] == emulator.service_account_upn
        )
        chat = next(c["id"] for c in tenant["chats"] if bot in c["members"])
        body = graph.post(
            f"/chats/{chat}/messages",
            {"body": {"content": "Truck 12 late"}},
            token_kind="delegated",
        )
        assert body["id"]
        assert any("Truck 12 late" in str(m) for m in emulator.control.sent_messages())

    def test_app_only_cannot_post_to_a_chat(self, graph_settings, emulator):
        chat = emulator.control.tenant()["chats"][0]["id"]
        with pytest.raises((GraphPermissionDenied, Permanent)):
            graph.post(f"/chats/{chat}/messages", {"body": {"content": "x"}})

    def test_a_refresh_writes_the_cache_back(self, graph_settings, emulator, ada_admin):
        account = self._connect(
            emulator, Actor(kind="user", name="ada-admin", role="admin", user=ada_admin)
        )
        first = teams_sender.delegated_token()
        refreshed = teams_sender.delegated_token(force_refresh=True)
        assert refreshed != first
        account.refresh_from_db()
        assert account.cache_version == 2 and account.last_refresh_at
        # Another process (simulated by forgetting ours) reloads the stored cache.
        auth.invalidate()
        assert teams_sender.delegated_token() == refreshed

    def test_only_admins_connect(self, graph_settings, emulator, otto_operator):
        actor = Actor(kind="user", name="otto-operator", role="operator", user=otto_operator)
        with pytest.raises(PermissionDenied):
            teams_sender.complete_delegated_connect(actor, {}, {})
        assert AuditEvent.objects.get(action="teams_sender.connect").outcome == "denied"

    def test_a_forged_redirect_is_refused_and_audited(self, graph_settings, emulator, ada_admin):
        _, flow = teams_sender.start_delegated_connect("http://127.0.0.1:8000/cb", prompt=None)
        actor = Actor(kind="user", name="ada-admin", role="admin", user=ada_admin)
        with pytest.raises(TokenError):
            teams_sender.complete_delegated_connect(actor, flow, {"code": "x", "state": "forged"})
        assert AuditEvent.objects.get(action="teams_sender.connect").outcome == "failure"
        assert not DelegatedAccount.objects.exists()

    def test_without_a_sender_the_error_says_what_to_do(self, graph_settings, emulator):
        with pytest.raises(TokenError, match="Connect Teams sender"):
            teams_sender.delegated_token()

    def test_disconnect(self, graph_settings, emulator, ada_admin):
        actor = Actor(kind="user", name="ada-admin", role="admin", user=ada_admin)
        self._connect(emulator, actor)
        assert teams_sender.disconnect_delegated(actor) == 1
        assert DelegatedAccount.objects.get().token_cache_encrypted == ""
        with pytest.raises(TokenError):
            teams_sender.delegated_token()
