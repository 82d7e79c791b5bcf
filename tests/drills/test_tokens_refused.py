"""Drill: every client secret expired (AADSTS7000222).

Before: the workers' cached tokens hid it for up to an hour, the Token tile said "OK …
active", no alert fired and the Credentials page showed the expired secret as active with a
blank last error.
"""

from __future__ import annotations

import os
import re
import time

import pytest
from django.urls import reverse
from django_q.tasks import async_task

from integrations.microsoft.models import Credential
from portal.alerts.models import Alert, TokenHealth
from tests.drills.conftest import rule, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RULE = "token_refused"


def _alert(name: str) -> str:
    found = Alert.objects.filter(rule=name).values_list("state", flat=True).first()
    return found or "not evaluated"


def test_an_expired_secret_is_alerted_shown_and_cleared_by_the_rotation(
    graph_settings, emulator, graph_worker, client, ada_admin
):
    # A worker holding a token from MSAL's cache, as every worker does.
    graph_worker(CREDENTIAL_RECHECK_SECONDS="1")
    async_task("portal.alerts.token_health.check")
    active = Credential.objects.get(state="active")
    wait_for(lambda: _alert(RULE) == "ok", timeout=60)  # the worker's first check

    # The incident: the secret expires in Entra ID.
    demo = next(
        s["keyId"]
        for s in emulator.control.secrets(emulator.client_id)
        if s["displayName"] == "demo secret"
    )
    emulator.control.expire_secret(emulator.client_id, demo)
    async_task("portal.alerts.token_health.check")  # the minute's schedule, in the worker
    wait_for(lambda: _alert(RULE) == "firing", timeout=60)
    health = TokenHealth.objects.get(credential=active)
    assert health.failure_code == 7000222
    assert not health.failure_process.endswith(f":{os.getpid()}")  # seen by a worker

    client.force_login(ada_admin)
    dashboard = client.get(reverse("console:dashboard"))
    token = next(h for h in dashboard.context["health"] if h["name"] == "Token")
    assert token["state"] == "bad" and "expired (AADSTS7000222)" in token["text"]
    banner = re.search(
        r'<li id="banner-token_refused">.*?<a href="([^"]+)"><strong>Microsoft sign-in refused',
        dashboard.content.decode(),
    )
    assert banner, "the dashboard's banner names the alert"

    # Its link leads to the rotation, and the page names what is wrong.
    link = banner.group(1)
    assert link == str(rule(RULE).link) == reverse("console:credentials") + "#wizard-title"
    page = client.get(link).content.decode()
    assert "active · failing" in page
    assert "Microsoft sign-in refused: expired (AADSTS7000222)" in page
    assert f'action="{reverse("console:credential_add")}"' in page

    # The fix, through the page's forms: a new secret added, verified, activated.
    value = emulator.control.add_secret(emulator.client_id)["secretText"]
    response = client.post(
        reverse("console:credential_add"),
        {"value": value, "display_name": "after the expiry"},
    )
    assert response.status_code == 302
    new = Credential.objects.get(state="pending")
    assert client.post(reverse("console:credential_verify", args=[new.pk])).status_code == 302
    assert client.post(reverse("console:credential_activate", args=[new.pk])).status_code == 302
    new.refresh_from_db()
    assert new.state == "active"

    # The worker follows within its recheck interval; its next check clears the alert.
    def checked_ok() -> bool:
        async_task("portal.alerts.token_health.check")
        time.sleep(1)
        return _alert(RULE) == "ok"

    wait_for(checked_ok, timeout=60)
    dashboard = client.get(reverse("console:dashboard"))
    assert "banner-token_refused" not in dashboard.content.decode()
    token = next(h for h in dashboard.context["health"] if h["name"] == "Token")
    assert token["state"] == "ok"
