"""Delegated auth-code + refresh flow for the Teams service account, through MSAL."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import msal
import pytest

from integrations.graph_emulator.httptypes import b64url_decode

from .conftest import BOT, HANNAH

REDIRECT = "http://localhost:8000/microsoft/callback"
SCOPES = ["ChatMessage.Send", "ChannelMessage.Send"]


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


def _claims(token):
    return json.loads(b64url_decode(token.split(".")[1]))


def test_msal_auth_code_flow_refresh_and_silent(emulator):
    app = _msal(emulator)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT)
    r = emulator.session().get(flow["auth_uri"], allow_redirects=False)
    assert r.status_code == 302
    loc = urlsplit(r.headers["Location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == REDIRECT
    auth_response = {k: v[0] for k, v in parse_qs(loc.query).items()}
    assert auth_response["state"] == flow["state"]
    result = app.acquire_token_by_auth_code_flow(flow, auth_response)
    assert "access_token" in result, result
    assert result["id_token_claims"]["preferred_username"] == BOT
    assert result["id_token_claims"]["tid"] == emulator.tenant_id
    at = _claims(result["access_token"])
    assert set(at["scp"].split()) == set(SCOPES)
    assert at["upn"] == BOT and at["oid"] == result["id_token_claims"]["oid"]
    assert "refresh_token" in result

    accounts = app.get_accounts()
    assert accounts and accounts[0]["username"] == BOT
    cached = app.acquire_token_silent(SCOPES, account=accounts[0])
    assert cached["token_source"] == "cache"
    refreshed = app.acquire_token_silent(SCOPES, account=accounts[0], force_refresh=True)
    assert refreshed["token_source"] == "identity_provider"
    assert refreshed["access_token"] != result["access_token"]

    # the code is single-use
    again = app.acquire_token_by_auth_code_flow(dict(flow), auth_response)
    assert again.get("error") == "invalid_grant"


def test_login_hint_and_account_picker(emulator):
    s = emulator.session()
    params = {
        "client_id": emulator.client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid ChatMessage.Send",
        "state": "s1",
    }
    r = s.get(
        f"{emulator.authority}/oauth2/v2.0/authorize",
        params={**params, "login_hint": HANNAH},
        allow_redirects=False,
    )
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    t = s.post(
        f"{emulator.authority}/oauth2/v2.0/token",
        data={
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
        },
    )
    assert _claims(t.json()["access_token"])["upn"] == HANNAH
    page = s.get(
        f"{emulator.authority}/oauth2/v2.0/authorize", params={**params, "prompt": "select_account"}
    )
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert BOT in page.text and HANNAH in page.text


def test_redirect_uri_mismatch_and_bad_client(emulator):
    s = emulator.session()
    r = s.get(
        f"{emulator.authority}/oauth2/v2.0/authorize",
        params={
            "client_id": emulator.client_id,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": "ChatMessage.Send",
            "state": "s",
        },
        allow_redirects=False,
    )
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    t = s.post(
        f"{emulator.authority}/oauth2/v2.0/token",
        data={
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://localhost:9999/other",
        },
    )
    assert t.status_code == 400 and t.json()["error"] == "invalid_grant"
    r = s.get(
        f"{emulator.authority}/oauth2/v2.0/authorize",
        params={
            "client_id": "nope",
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": "openid",
        },
        allow_redirects=False,
    )
    assert r.status_code == 400


def _authorize(emulator, redirect_uri, scope="openid ChatMessage.Send"):
    return emulator.session().get(
        f"{emulator.authority}/oauth2/v2.0/authorize",
        params={
            "client_id": emulator.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": scope,
            "login_hint": BOT,
        },
        allow_redirects=False,
    )


def test_redirect_uris_match_the_registration_exactly(emulator):
    assert _authorize(emulator, REDIRECT).status_code == 302
    # Entra compares scheme, host, port and path exactly: no prefix, no trailing slash, no
    # other loopback port, no other host name for the same machine.
    for near_miss in (
        REDIRECT + "/",
        REDIRECT.replace("8000", "8001"),
        REDIRECT.replace("localhost", "127.0.0.1"),
        REDIRECT.replace("http:", "https:"),
        REDIRECT + "/extra",
    ):
        answer = _authorize(emulator, near_miss)
        assert answer.status_code == 400 and "AADSTS50011" in answer.text, near_miss
        assert "Location" not in answer.headers  # never redirects to an unregistered URI


def test_no_registered_redirect_uri_means_none_is_allowed(emulator):
    emulator.control.set_redirect_uris(emulator.client_id, [])
    for uri in (REDIRECT, "http://127.0.0.1:8000/callback", "http://localhost/"):
        answer = _authorize(emulator, uri)
        assert answer.status_code == 400 and "AADSTS50011" in answer.text


def _redeem(emulator, scope):
    answer = _authorize(emulator, REDIRECT, scope=scope)
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
    return emulator.session().post(
        f"{emulator.authority}/oauth2/v2.0/token",
        data={
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "scope": scope,
        },
    )


def test_a_refresh_token_only_with_offline_access(emulator):
    without = _redeem(emulator, "openid ChatMessage.Send").json()
    assert "access_token" in without and "refresh_token" not in without
    with_offline = _redeem(emulator, "openid offline_access ChatMessage.Send").json()
    assert with_offline["refresh_token"]
    refreshed = (
        emulator.session()
        .post(
            f"{emulator.authority}/oauth2/v2.0/token",
            data={
                "client_id": emulator.client_id,
                "client_secret": emulator.client_secret,
                "grant_type": "refresh_token",
                "refresh_token": with_offline["refresh_token"],
                "scope": "ChatMessage.Send",
            },
        )
        .json()
    )
    assert refreshed["access_token"] and refreshed["refresh_token"]
