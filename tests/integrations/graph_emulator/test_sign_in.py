"""Staff sign-in on the emulator: RS256 id tokens verifiable against the JWKS, app roles,
amr, groups, disabled accounts, the sign-in page and the tamper modes tests rely on."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import jwt
import msal
import pytest

from .conftest import HANNAH, MARIA

REDIRECT = "http://localhost:8000/login/microsoft/callback"
PRIYA = "priya.raman@fleetdemo.onmicrosoft.com"
SOFIA = "sofia.marchetti@fleetdemo.onmicrosoft.com"
ERIK = "erik.johansson@fleetdemo.onmicrosoft.com"


@pytest.fixture(autouse=True)
def _registered(emulator):
    """The app registration lists this test's redirect URI (Entra matches it exactly)."""
    emulator.control.set_redirect_uris(emulator.client_id, [REDIRECT])


def _msal(emu):
    return msal.ConfidentialClientApplication(
        emu.client_id,
        client_credential=emu.client_secret,
        authority=emu.authority,
        instance_discovery=False,
        http_client=emu.session(),
    )


def _sign_in(emu, upn):
    app = _msal(emu)
    flow = app.initiate_auth_code_flow([], redirect_uri=REDIRECT, login_hint=upn)
    r = emu.session().get(flow["auth_uri"], allow_redirects=False)
    assert r.status_code == 302, r.text
    query = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["Location"]).query).items()}
    return app, flow, query


def _redeem(emu, upn):
    app, flow, query = _sign_in(emu, upn)
    result = app.acquire_token_by_auth_code_flow(flow, query)
    assert "id_token" in result, result
    return result


def _jwks(emu):
    doc = emu.session().get(f"{emu.authority}/v2.0/.well-known/openid-configuration").json()
    return jwt.PyJWKSet.from_dict(emu.session().get(doc["jwks_uri"]).json()), doc


def _verify(emu, token):
    keys, doc = _jwks(emu)
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.decode(
        token, keys[kid].key, algorithms=["RS256"], audience=emu.client_id, issuer=doc["issuer"]
    )


def test_id_token_is_rs256_and_verifies_against_the_published_keys(emulator):
    result = _redeem(emulator, MARIA)
    assert jwt.get_unverified_header(result["id_token"])["alg"] == "RS256"
    claims = _verify(emulator, result["id_token"])
    assert claims["preferred_username"] == MARIA
    assert claims["tid"] == emulator.tenant_id
    assert claims["roles"] == ["Portal.Admin"]
    assert claims["amr"] == ["pwd", "mfa"]
    assert claims["nonce"]  # MSAL checked it equals the hash of the flow's nonce


def test_demo_staff_hold_one_portal_role_each_and_others_none(emulator):
    roles = {
        upn: _verify(emulator, _redeem(emulator, upn)["id_token"]).get("roles")
        for upn in (MARIA, HANNAH, PRIYA, SOFIA, ERIK)
    }
    assert roles == {
        MARIA: ["Portal.Admin"],
        HANNAH: ["Portal.Operator"],
        PRIYA: ["Portal.Support"],
        SOFIA: ["Portal.Viewer"],
        ERIK: None,
    }


def test_app_roles_amr_and_groups_are_set_through_the_control_api(emulator):
    emulator.control.set_app_roles(ERIK, ["Portal.Support", "Portal.Support"])
    emulator.control.set_amr(ERIK, ["pwd", "mfa", "otp"])
    emulator.control.set_groups(ERIK, ["5f2c0c6e-0000-4000-8000-000000000001"])
    claims = _verify(emulator, _redeem(emulator, ERIK)["id_token"])
    assert claims["roles"] == ["Portal.Support"]
    assert claims["amr"] == ["pwd", "mfa", "otp"]
    assert claims["groups"] == ["5f2c0c6e-0000-4000-8000-000000000001"]

    # A refresh reflects the role change (that is how the portal re-checks a live session).
    app = _msal(emulator)
    first = _redeem(emulator, ERIK)
    emulator.control.set_app_roles(ERIK, [])
    refreshed = app.acquire_token_by_refresh_token(first["refresh_token"], scopes=[])
    assert "roles" not in _verify(emulator, refreshed["id_token"])


@pytest.mark.parametrize("body", [{"roles": "Portal.Admin"}, {"roles": [1]}, {}])
def test_bad_control_bodies_get_400(emulator, body):
    with pytest.raises(Exception, match="400"):
        emulator.control._call("PUT", f"users/{ERIK}/app-roles", body)


def test_unknown_user_gets_404(emulator):
    with pytest.raises(Exception, match="404"):
        emulator.control.set_app_roles("nobody@fleetdemo.onmicrosoft.com", [])


def test_a_disabled_account_cannot_sign_in_or_refresh(emulator):
    first = _redeem(emulator, ERIK)
    emulator.control.set_account_enabled(ERIK, False)
    _, _, query = _sign_in(emulator, ERIK)
    assert query["error"] == "access_denied" and "AADSTS50057" in query["error_description"]
    refreshed = _msal(emulator).acquire_token_by_refresh_token(first["refresh_token"], [])
    assert refreshed.get("error") == "invalid_grant"


def test_sign_in_page_lists_demo_staff_with_their_roles(emulator):
    app = _msal(emulator)
    flow = app.initiate_auth_code_flow([], redirect_uri=REDIRECT, prompt="select_account")
    page = emulator.session().get(flow["auth_uri"]).text
    demo, others = page.split("Everyone else")
    assert "Maria Kowalski" in demo and "(Portal.Admin)" in demo
    assert "Sofia Marchetti" in demo and "(Portal.Viewer)" in demo
    assert "Erik Johansson" in others and "no app role" in others


def test_forged_token_fails_signature_check(emulator):
    emulator.control.tamper_next_id_token("forged")
    token = _redeem(emulator, MARIA)["id_token"]
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(emulator, token)
    # one-shot: the next token is good again
    _verify(emulator, _redeem(emulator, MARIA)["id_token"])


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("expired", jwt.ExpiredSignatureError),
        ("wrong_audience", jwt.InvalidAudienceError),
        ("wrong_tenant", jwt.InvalidIssuerError),
        ("wrong_issuer", jwt.InvalidIssuerError),
    ],
)
def test_tampered_tokens_are_validly_signed_but_wrong(emulator, mode, error):
    emulator.control.tamper_next_id_token(mode)
    token = _redeem(emulator, MARIA)["id_token"]
    with pytest.raises(error):
        _verify(emulator, token)


def test_wrong_nonce_is_caught_by_msal(emulator):
    emulator.control.tamper_next_id_token("wrong_nonce")
    app, flow, query = _sign_in(emulator, MARIA)
    with pytest.raises(RuntimeError, match="nonce"):
        app.acquire_token_by_auth_code_flow(flow, query)


def test_unknown_tamper_mode_is_refused(emulator):
    with pytest.raises(Exception, match="400"):
        emulator.control.tamper_next_id_token("sideways")
