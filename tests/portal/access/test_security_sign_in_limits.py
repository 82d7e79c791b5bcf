"""Sign-in limits: unauthenticated sign-in attempts are counted per address, not written to
the audit chain one row each; one address gets a limit of its own (password spraying); the
password form answers alike for a Microsoft sign-in account and a name nobody has.

Found: every failed password sign-in with a new username and every SSO callback without a
pending sign-in added a hash-chained audit row; 40 usernames with one password from one
address were never throttled (the lockout is per username and address); a Microsoft account
got "password sign-in is kept for break-glass accounts" where a name nobody has got "Wrong
username or password".
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from portal.access.models import CredentialFailure, EntraAccount
from portal.audit.models import AuditEvent
from tests.conftest import PERSONA_PASSWORD

pytestmark = pytest.mark.django_db

SPRAYER = "198.51.100.66"
PROXY = "10.0.0.5"


def sign_in(client, username, password, address=SPRAYER, **headers):
    return client.post(
        reverse("login"),
        {"username": username, "password": password},
        REMOTE_ADDR=address,
        **headers,
    )


def sign_in_counter(key=SPRAYER):
    return CredentialFailure.objects.filter(scope=CredentialFailure.Scope.SIGN_IN, key=key)


def alert_text(response) -> str:
    found = re.search(rb'<p class="notice error" role="alert">(.*?)</p>', response.content, re.S)
    assert found, response.content[:500]
    return found.group(1).decode()


# --- failed password sign-ins ----------------------------------------------------------------


def test_failures_for_unknown_usernames_are_counted_not_audited(client):
    for number in range(12):
        assert sign_in(client, f"nobody-{number}", "Winter2026!").status_code == 200
    assert not AuditEvent.objects.filter(action__startswith="auth.").exists()
    row = sign_in_counter().get()
    assert row.count == 12 and row.last_path == reverse("login")


def test_failures_for_an_existing_account_are_still_audited_and_counted(client, sam_support):
    sign_in(client, "sam-support", "not-the-password")
    assert AuditEvent.objects.filter(
        action="auth.login", outcome="failure", target_id="sam-support"
    ).exists()
    assert sign_in_counter().get().count == 1


def test_repeated_lockouts_of_unknown_usernames_write_no_audit_rows(client, settings):
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 1000
    for _ in range(settings.AXES_FAILURE_LIMIT + 3):
        sign_in(client, "nobody", "Winter2026!")
    assert not AuditEvent.objects.filter(action__startswith="auth.").exists()


# --- password spraying -------------------------------------------------------------------------


def test_spraying_one_password_over_many_usernames_is_throttled_per_address(
    client, settings, sam_support
):
    limit = settings.LOGIN_ADDRESS_FAILURE_LIMIT
    assert limit > settings.AXES_FAILURE_LIMIT
    names = [f"user-{number}" for number in range(40)]
    answers = [sign_in(client, name, "Winter2026!").status_code for name in names]
    assert answers[:limit] == [200] * limit
    assert set(answers[limit:]) == {429}
    # Refused before the password is checked: the right one does not help from there...
    refused = sign_in(client, "sam-support", PERSONA_PASSWORD)
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert b"Too many failed sign-ins from your network" in refused.content
    assert not refused.wsgi_request.user.is_authenticated
    row = sign_in_counter().get()
    assert row.count == limit and row.refused == 40 - limit + 1
    # ...but it does from another address.
    assert sign_in(client, "sam-support", PERSONA_PASSWORD, address="192.0.2.10").status_code == 302


def test_the_address_limit_follows_the_client_behind_trusted_proxies(client, settings, sam_support):
    settings.TRUSTED_PROXIES = ["10.0.0.0/24"]
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 8
    for number in range(8):
        # The sprayer writes a different left hop each time: only the proxy's hop counts.
        spoof = f"203.0.113.{number}, {SPRAYER}"
        sign_in(client, f"user-{number}", "Winter2026!", address=PROXY, HTTP_X_FORWARDED_FOR=spoof)
    blocked = sign_in(client, "user-x", "x", address=PROXY, HTTP_X_FORWARDED_FOR=SPRAYER)
    assert blocked.status_code == 429
    # Another client behind the same proxy is not the sprayer.
    other = sign_in(
        client, "sam-support", PERSONA_PASSWORD, address=PROXY, HTTP_X_FORWARDED_FOR="192.0.2.10"
    )
    assert other.status_code == 302
    assert not sign_in_counter(PROXY).exists()


def test_an_address_limit_at_or_below_the_per_user_limit_stops_start_up():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "portal.settings_test",
            "PORTAL_IGNORE_DOTENV": "1",
            "LOGIN_FAILURE_LIMIT": "10",
            "LOGIN_ADDRESS_FAILURE_LIMIT": "10",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "LOGIN_ADDRESS_FAILURE_LIMIT must be at least 11" in result.stderr


# --- the SSO callback --------------------------------------------------------------------------


def test_callbacks_without_a_pending_sign_in_are_counted_not_audited_and_limited(client, settings):
    settings.SSO_ENABLED = True
    limit = settings.LOGIN_ADDRESS_FAILURE_LIMIT
    answers = [
        client.get(f"/login/microsoft/callback?code=c{n}&state=s{n}", REMOTE_ADDR=SPRAYER)
        for n in range(limit + 5)
    ]
    assert [a.status_code for a in answers[:limit]] == [400] * limit
    assert {a.status_code for a in answers[limit:]} == {429}
    assert int(answers[-1]["Retry-After"]) > 0
    assert not AuditEvent.objects.filter(action__startswith="auth.").exists()
    row = sign_in_counter().get()
    assert (row.count, row.refused) == (limit, 5)
    assert row.last_path == "/login/microsoft/callback"
    # The same address's password sign-ins wait too: one budget per address.
    assert sign_in(client, "anyone", "x").status_code == 429


# --- one message for every refused password ----------------------------------------------------


def test_a_microsoft_account_and_an_unknown_name_get_the_same_answer(client, settings, sam_support):
    settings.SSO_ENABLED = True
    settings.SSO_ONLY = False
    entra = get_user_model().objects.create_user("kim@contoso.example", password=PERSONA_PASSWORD)
    EntraAccount.objects.create(user=entra, tenant_id="t", object_id="o", upn=entra.username)
    microsoft = alert_text(sign_in(client, "kim@contoso.example", PERSONA_PASSWORD))
    unknown = alert_text(sign_in(client, "nobody@contoso.example", PERSONA_PASSWORD))
    wrong_password = alert_text(sign_in(client, "sam-support", "not-the-password"))
    assert microsoft == unknown == wrong_password
    assert "Sign in with Microsoft" in microsoft
