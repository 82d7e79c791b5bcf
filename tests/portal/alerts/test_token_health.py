"""Token acquisition health against the emulator: a refused credential is seen by every
consumer (alert, Token tile, Credentials page, /metrics) and clears after the rotation."""

from __future__ import annotations

import pytest
from django.urls import reverse

from integrations.graph import auth
from integrations.graph.errors import TokenError
from integrations.microsoft import credential_lifecycle
from integrations.microsoft.models import Credential
from portal.access.actors import Actor
from portal.alerts import token_health
from portal.alerts.models import Alert, TokenHealth
from tests.integrations.microsoft.conftest import (  # noqa: F401
    _fresh_process_state,
    graph_settings,
)

# Activation invalidates the process's MSAL app on commit, so these tests really commit.
pytestmark = pytest.mark.django_db(transaction=True)


def _expire_demo_secret(emulator) -> None:
    key = next(
        s["keyId"]
        for s in emulator.control.secrets(emulator.client_id)
        if s["displayName"] == "demo secret"
    )
    emulator.control.expire_secret(emulator.client_id, key)


def test_the_check_bypasses_msal_s_cache_and_names_the_refusal(graph_settings, emulator):
    auth.app_token()  # a cached token, as every worker holds one
    active = Credential.objects.get(state="active")
    assert TokenHealth.objects.get(credential=active).failing is False
    _expire_demo_secret(emulator)
    auth.app_token()  # the cache still answers: it hides the expired secret
    assert token_health.check().startswith("refused")
    health = TokenHealth.objects.get(credential=active)
    assert health.failing and health.failure_code == 7000222
    assert health.reason == "expired (AADSTS7000222)"
    assert TokenHealth.objects.active_refusal() == health
    alert = Alert.objects.get(rule="token_refused")
    assert alert.state == "firing" and alert.value == 7000222
    assert "expired (AADSTS7000222)" in alert.message


def test_a_worker_s_refusal_is_recorded_for_every_process_to_see(graph_settings, emulator):
    auth.app_token()
    emulator.control.remove_secret(
        emulator.client_id,
        next(
            s["keyId"]
            for s in emulator.control.secrets(emulator.client_id)
            if s["displayName"] == "demo secret"
        ),
    )
    auth.drop_cached_app_token()
    with pytest.raises(TokenError):
        auth.app_token()
    health = TokenHealth.objects.get()
    assert health.failure_code == 7000215
    assert health.reason == "invalid or deleted (AADSTS7000215)"
    assert health.failure_process


def test_unknown_codes_and_transport_failures_have_reasons():
    assert TokenHealth(failure_code=700016).reason == "app not in this tenant (AADSTS700016)"
    assert TokenHealth(failure_code=123).reason == "refused (AADSTS123)"
    assert TokenHealth(failure_error="unreachable").reason == "identity platform unreachable"


def test_not_set_up_is_not_a_failure(settings):
    settings.MICROSOFT_TENANT_ID = ""
    assert token_health.check() == "not set up"
    token_health.evaluate_rule(token_health.RULE)
    assert Alert.objects.get(rule="token_refused").state == "ok"
    assert not TokenHealth.objects.exists()


def test_everyone_sees_it_and_the_rotation_clears_it(client, graph_settings, emulator, ada_admin):
    auth.app_token()
    _expire_demo_secret(emulator)
    token_health.check()

    client.force_login(ada_admin)
    dashboard = client.get(reverse("console:dashboard"))
    token = next(h for h in dashboard.context["health"] if h["name"] == "Token")
    assert token["state"] == "bad" and "expired (AADSTS7000222)" in token["text"]
    assert token["href"] == reverse("console:credentials") + "#wizard-title"
    body = dashboard.content.decode()
    fix = reverse("console:credentials") + "#wizard-title"
    assert (
        '<li id="banner-token_refused"><span class="state state-dead">firing</span> '
        f'<a href="{fix}"><strong>Microsoft sign-in refused</strong></a>'
    ) in body
    page = client.get(token["href"]).content.decode()
    assert "active · failing" in page
    assert "Microsoft sign-in refused: expired (AADSTS7000222)" in page
    metrics = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert 'fleet_token_refused{code="7000222"} 1.0' in metrics

    # The fix: a new secret from the app registration, added, verified and activated.
    actor = Actor(kind="user", name=ada_admin.username, role="admin", user=ada_admin)
    new_value = emulator.control.add_secret(emulator.client_id)["secretText"]
    pending = credential_lifecycle.add_secret(actor, new_value, "after the expiry", None)
    assert credential_lifecycle.verify_secret(actor, pending.pk).ok
    credential_lifecycle.activate(actor, pending.pk)
    token_health.check()
    assert Alert.objects.get(rule="token_refused").state == "ok"
    dashboard = client.get(reverse("console:dashboard"))
    token = next(h for h in dashboard.context["health"] if h["name"] == "Token")
    assert token["state"] == "ok"
    assert "banner-token_refused" not in dashboard.content.decode()
