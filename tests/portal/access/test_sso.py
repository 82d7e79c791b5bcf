"""Sign in with Microsoft (through the emulator over HTTPS): roles from Entra app roles,
just-in-time accounts linked by oid, and every refusal the issue lists."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from portal.access import sso
from portal.access.actors import Actor, role_of
from portal.access.api_tokens import create_token
from portal.access.models import CredentialFailure, EntraAccount, LastSignIn
from portal.access.tasks import recheck_entra_accounts
from portal.access.users import UserError, set_role
from portal.alerts.models import Alert
from portal.audit.models import AuditEvent
from tests.conftest import PERSONA_PASSWORD, PERSONAS
from tests.portal.access.sso_support import ENTRA_STAFF, NO_ROLE, pick_account, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def signed_in_user(client):
    return get_user_model().objects.filter(pk=client.session.get("_auth_user_id")).first()


def events(action, **filters):
    return list(AuditEvent.objects.filter(action=action, **filters).order_by("id"))


@pytest.mark.parametrize("role", ["viewer", "support", "operator", "admin"])
def test_each_demo_person_signs_in_with_the_role_entra_gives(client, emulator, sso_settings, role):
    response = sign_in(client, emulator, ENTRA_STAFF[role])
    assert response.status_code == 302 and response["Location"] == "/"
    user = signed_in_user(client)
    assert user.username == ENTRA_STAFF[role]
    assert role_of(user) == role
    assert not user.has_usable_password()
    account = EntraAccount.objects.get(user=user)
    assert account.tenant_id == emulator.tenant_id and account.object_id
    assert LastSignIn.objects.get(user=user).method == LastSignIn.Method.ENTRA_MFA
    created = events("user.create", target_id=str(user.pk))[0]
    assert created.params["source"] == "entra" and created.actor_name == "entra-sso"
    assert client.get("/").status_code == 200


def test_the_next_url_survives_the_round_trip(client, emulator, sso_settings):
    response = sign_in(client, emulator, ENTRA_STAFF["viewer"], next_url="/jobs/")
    assert response["Location"] == "/jobs/"


def test_a_role_changed_in_entra_applies_at_the_next_sign_in(client, emulator, sso_settings):
    upn = ENTRA_STAFF["viewer"]
    sign_in(client, emulator, upn)
    user = signed_in_user(client)
    client.logout()
    emulator.control.set_app_roles(upn, ["Portal.Operator"])
    sign_in(client, emulator, upn)
    assert signed_in_user(client).pk == user.pk  # the same account (same oid)
    assert role_of(get_user_model().objects.get(pk=user.pk)) == "operator"
    change = events("user.set_role", target_id=str(user.pk))[-1]
    assert change.params["before"] == "viewer" and change.params["after"] == "operator"
    assert change.params["source"] == "entra"


def test_no_role_means_no_access_a_clear_page_and_an_audit_event(client, emulator, sso_settings):
    response = sign_in(client, emulator, NO_ROLE)
    assert response.status_code == 403
    assert b"no portal role is assigned to you" in response.content
    assert signed_in_user(client) is None
    denied = events("auth.sso", outcome="denied")[-1]
    assert denied.actor_name == NO_ROLE and "no portal app role" in denied.reason
    assert client.get("/").status_code == 302  # still sent to sign in


def test_a_role_removed_in_entra_is_removed_at_the_next_sign_in_and_tokens_stop(
    client, emulator, sso_settings
):
    upn = ENTRA_STAFF["support"]
    sign_in(client, emulator, upn)
    user = signed_in_user(client)
    _, raw = create_token(Actor.system("tests"), user.username, "ci")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert client.get("/api/queue/dead-letter", **auth).status_code == 200
    client.logout()
    emulator.control.set_app_roles(upn, [])
    assert sign_in(client, emulator, upn).status_code == 403
    assert role_of(get_user_model().objects.get(pk=user.pk)) == ""
    assert client.get("/api/queue/dead-letter", **auth).status_code == 403


def test_group_map_grants_a_role(client, emulator, sso_settings):
    group = "0b6d3c52-3b7e-4c39-9d1e-7e0f5b2a9c11"
    sso_settings.SSO_GROUP_ROLE_MAP = {group: "operator"}
    emulator.control.set_groups(NO_ROLE, [group])
    sign_in(client, emulator, NO_ROLE)
    assert role_of(signed_in_user(client)) == "operator"


def test_linked_by_object_id_never_by_name(client, emulator, sso_settings):
    upn = ENTRA_STAFF["admin"]
    local = get_user_model().objects.create_user(upn, password=PERSONA_PASSWORD)
    sign_in(client, emulator, upn)
    user = signed_in_user(client)
    assert user.pk != local.pk and user.username.startswith(upn + "~")
    assert role_of(get_user_model().objects.get(pk=local.pk)) == ""  # untouched


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("forged", "InvalidSignatureError"),
        ("expired", "ExpiredSignatureError"),
        ("wrong_audience", "InvalidAudienceError"),
        ("wrong_tenant", "InvalidIssuerError"),
        ("wrong_issuer", "InvalidIssuerError"),
        ("wrong_nonce", "nonce check failed"),
    ],
)
def test_bad_id_tokens_are_refused(client, emulator, sso_settings, mode, reason):
    emulator.control.tamper_next_id_token(mode)
    response = sign_in(client, emulator, ENTRA_STAFF["admin"])
    assert response.status_code == 403
    assert signed_in_user(client) is None
    assert not EntraAccount.objects.exists()
    assert reason in events("auth.sso", outcome="denied")[-1].reason


def test_replaying_the_callback_is_refused(client, emulator, sso_settings):
    start = client.get("/login/microsoft/")
    back = urlsplit(pick_account(emulator, start["Location"], ENTRA_STAFF["viewer"]))
    assert client.get(f"{back.path}?{back.query}").status_code == 302
    client.logout()
    replay = client.get(f"{back.path}?{back.query}")
    assert replay.status_code == 400 and b"already used or has expired" in replay.content
    assert signed_in_user(client) is None
    # Nothing was pending in this session: counted against the address, not audited.
    assert not events("auth.sso", outcome="denied")
    counted = CredentialFailure.objects.get(scope=CredentialFailure.Scope.SIGN_IN)
    assert counted.count == 1 and counted.last_path == back.path


def test_an_answer_for_another_sign_in_is_refused(client, emulator, sso_settings):
    client.get("/login/microsoft/")  # this browser's own pending sign-in
    other = client.__class__()
    start = other.get("/login/microsoft/")
    back = urlsplit(pick_account(emulator, start["Location"], ENTRA_STAFF["admin"]))
    # The attacker's code + state delivered to the victim's browser (login CSRF).
    response = client.get(f"{back.path}?{back.query}")
    assert response.status_code == 400
    assert signed_in_user(client) is None
    assert "state check failed" in events("auth.sso", outcome="denied")[-1].reason


def test_an_error_from_microsoft_is_shown_and_audited(client, emulator, sso_settings):
    emulator.control.set_account_enabled(ENTRA_STAFF["viewer"], False)
    response = sign_in(client, emulator, ENTRA_STAFF["viewer"])
    assert response.status_code == 403 and b"AADSTS50057" in response.content


def test_sso_switched_off_answers_404(client, db):
    assert client.get("/login/microsoft/").status_code == 404
    assert client.get("/login/microsoft/callback?code=x&state=y").status_code == 404


# ------------------------------------------------------------------ live-session re-check


def _age_check(client):
    session = client.session
    data = session[sso.SESSION_KEY]
    data["checked_at"] = time.time() - 3600
    session[sso.SESSION_KEY] = data
    session.save()


def test_a_live_session_follows_a_role_change_at_the_re_check(client, emulator, sso_settings):
    upn = ENTRA_STAFF["operator"]
    sign_in(client, emulator, upn)
    emulator.control.set_app_roles(upn, ["Portal.Viewer"])
    assert client.get("/jobs/").status_code == 200
    assert role_of(signed_in_user(client)) == "operator"  # not yet due
    _age_check(client)
    assert client.get("/").status_code == 200
    assert role_of(signed_in_user(client)) == "viewer"
    assert time.time() - client.session[sso.SESSION_KEY]["checked_at"] < 60


@pytest.mark.parametrize("change", ["role removed", "account disabled"])
def test_a_live_session_ends_when_entra_takes_access_away(client, emulator, sso_settings, change):
    upn = ENTRA_STAFF["admin"]
    sign_in(client, emulator, upn)
    user = signed_in_user(client)
    if change == "role removed":
        emulator.control.set_app_roles(upn, [])
    else:
        emulator.control.set_account_enabled(upn, False)
    _age_check(client)
    response = client.get("/")
    assert response.status_code == 403 and b"has ended" in response.content
    assert signed_in_user(client) is None
    assert events("auth.sso_recheck", outcome="denied", target_id=str(user.pk))


# ------------------------------------------------------------------ MFA


def test_entra_mfa_is_trusted_when_configured(client, emulator, sso_settings):
    sso_settings.REQUIRE_MFA = True
    sso_settings.SSO_TRUST_ENTRA_MFA = True
    sign_in(client, emulator, ENTRA_STAFF["viewer"])  # the demo staff sign in with MFA
    assert client.get("/").status_code == 200


def test_without_trust_or_without_mfa_the_portal_asks_for_its_own_code(
    client, emulator, sso_settings
):
    sso_settings.REQUIRE_MFA = True
    sign_in(client, emulator, ENTRA_STAFF["viewer"])
    assert "/login/second-step/" in client.get("/")["Location"]
    client.logout()
    sso_settings.SSO_TRUST_ENTRA_MFA = True
    emulator.control.set_amr(ENTRA_STAFF["viewer"], ["pwd"])
    sign_in(client, emulator, ENTRA_STAFF["viewer"])
    assert "/login/second-step/" in client.get("/")["Location"]
    assert LastSignIn.objects.get(user=signed_in_user(client)).method == "entra"


# ------------------------------------------------------------------ SSO only, break-glass


def _password_login(client, username):
    return client.post("/login/", {"username": username, "password": PERSONA_PASSWORD})


def test_sso_only_refuses_passwords_except_break_glass_which_raises_an_alert(
    client, personas, sso_settings, mailoutbox
):
    sso_settings.SSO_ONLY = True
    sso_settings.SSO_BREAK_GLASS_ACCOUNTS = [PERSONAS["admin"]]
    sso_settings.ALERT_EMAIL_TO = ["oncall@example.com"]
    refused = _password_login(client, PERSONAS["operator"])
    assert refused.status_code == 200 and b"break-glass accounts only" in refused.content
    assert signed_in_user(client) is None
    unknown = _password_login(client, "nobody-at-all")
    assert b"break-glass accounts only" in unknown.content

    assert _password_login(client, PERSONAS["admin"]).status_code == 302
    user = signed_in_user(client)
    assert user.username == PERSONAS["admin"]
    assert LastSignIn.objects.get(user=user).method == LastSignIn.Method.BREAK_GLASS
    assert events("auth.break_glass", target_id=str(user.pk))
    alert = Alert.objects.get(rule="break_glass_sign_in")
    assert alert.state == "firing" and alert.value == 1
    assert any("Break-glass account used" in m.subject for m in mailoutbox)


def test_sso_only_ends_existing_password_sessions_of_other_accounts(client, personas, sso_settings):
    _password_login(client, PERSONAS["operator"])
    assert client.get("/").status_code == 200
    sso_settings.SSO_ONLY = True
    assert client.get("/").status_code == 302


def test_sso_users_cannot_use_a_password_even_without_sso_only(client, emulator, sso_settings):
    sign_in(client, emulator, ENTRA_STAFF["viewer"])
    user = signed_in_user(client)
    user.set_password(PERSONA_PASSWORD)
    user.save()
    client.logout()
    response = _password_login(client, user.username)
    # The answer a wrong password gets (it never says the name signs in with Microsoft).
    assert b"Wrong username or password. Accounts that sign in with Microsoft" in response.content
    assert signed_in_user(client) is None


def test_an_admin_cannot_give_an_sso_user_a_role_by_hand(client, emulator, sso_settings, ada_admin):
    sign_in(client, emulator, ENTRA_STAFF["viewer"])
    user = signed_in_user(client)
    admin = Actor(kind="user", name=ada_admin.username, role="admin", user=ada_admin)
    with pytest.raises(UserError, match="comes from the app roles assigned in Entra ID"):
        set_role(admin, user.username, "admin")
    assert role_of(get_user_model().objects.get(pk=user.pk)) == "viewer"
    assert Group.objects.get(name="admin").user_set.filter(pk=user.pk).count() == 0


def test_a_live_htmx_request_whose_session_ended_is_sent_to_sign_in(client, emulator, sso_settings):
    upn = ENTRA_STAFF["viewer"]
    sign_in(client, emulator, upn)
    emulator.control.set_app_roles(upn, [])
    _age_check(client)
    response = client.get("/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Redirect"] == "/login/"


FUZZ_QUERIES = [
    "",
    "code=",
    "state=",
    "code=x&state=y",
    "error=access_denied",
    "error=%00&error_description=%FF%FE",
    "code=" + "A" * 5000 + "&state=" + "B" * 5000,
    "state=\u00e9\u00e8&code=\U0001f600",
    "code=a&code=b&state=c&state=d",
]


@pytest.mark.parametrize("query", FUZZ_QUERIES)
@pytest.mark.parametrize("pending", [False, True])
def test_garbage_at_the_callback_is_a_clear_refusal_never_a_500(
    client, emulator, sso_settings, query, pending
):
    if pending:
        start = client.get("/login/microsoft/")
        if "state=" not in query:  # right state, garbage code: the token endpoint refuses
            state = next(
                p for p in urlsplit(start["Location"]).query.split("&") if p.startswith("state=")
            )
            query = f"{query}&{state}" if query else state
    response = client.get(f"/login/microsoft/callback?{query}")
    assert response.status_code in (400, 403), response.content[:300]
    assert signed_in_user(client) is None
    # Audited only when this session had started a sign-in; counted either way.
    assert bool(events("auth.sso", outcome="denied")) == pending
    assert CredentialFailure.objects.get(scope=CredentialFailure.Scope.SIGN_IN).count == 1


# ------------------------------------------------------------------ people with API tokens


def _signed_in_with_token(client, emulator, upn):
    sign_in(client, emulator, upn)
    user = signed_in_user(client)
    _, raw = create_token(Actor.system("tests"), user.username, "scripts")
    client.logout()  # no live session left: only the periodic re-check can notice changes
    return user, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.mark.parametrize("change", ["role removed", "account disabled"])
def test_api_tokens_stop_when_entra_takes_access_away_without_a_new_sign_in(
    client, emulator, sso_settings, change
):
    upn = ENTRA_STAFF["support"]
    user, auth = _signed_in_with_token(client, emulator, upn)
    assert client.get("/api/queue/dead-letter", **auth).status_code == 200
    if change == "role removed":
        emulator.control.set_app_roles(upn, [])
    else:
        emulator.control.set_account_enabled(upn, False)
    assert recheck_entra_accounts() == 1
    assert client.get("/api/queue/dead-letter", **auth).status_code == 403
    assert role_of(get_user_model().objects.get(pk=user.pk)) == ""
    withdrawn = events("user.set_role", target_id=str(user.pk))[-1]
    assert withdrawn.params["after"] == "" and withdrawn.actor_name == "entra-sso"
    # Running again is safe: a person without a role is still asked about (a role given back
    # in Entra returns with the next run); a disabled one has nothing left to ask with.
    assert recheck_entra_accounts() == (1 if change == "role removed" else 0)
    assert role_of(get_user_model().objects.get(pk=user.pk)) == ""


def test_the_periodic_re_check_applies_a_new_role_to_token_holders(client, emulator, sso_settings):
    upn = ENTRA_STAFF["support"]
    user, _ = _signed_in_with_token(client, emulator, upn)
    emulator.control.set_app_roles(upn, ["Portal.Operator"])
    assert recheck_entra_accounts() == 1
    assert role_of(get_user_model().objects.get(pk=user.pk)) == "operator"
    assert recheck_entra_accounts() == 1  # the rotated refresh token still works


def test_entra_unreachable_changes_nothing(client, emulator, sso_settings):
    user, auth = _signed_in_with_token(client, emulator, ENTRA_STAFF["support"])
    emulator.control.inject_fault(path=".*/oauth2/v2.0/token", status=503)
    try:
        assert recheck_entra_accounts() == 0
    finally:
        emulator.control.clear_faults()
    assert role_of(get_user_model().objects.get(pk=user.pk)) == "support"
    assert client.get("/api/queue/dead-letter", **auth).status_code == 200
