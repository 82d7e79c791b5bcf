"""Identity platform: discovery, client credentials, AADSTS errors, secrets, tokens."""

from __future__ import annotations

import json

import msal
import pytest

from integrations.graph_emulator.httptypes import b64url_decode


def _app(emu, secret=None, client_id=None):
    return msal.ConfidentialClientApplication(
        client_id or emu.client_id,
        client_credential=secret or emu.client_secret,
        authority=emu.authority,
        instance_discovery=False,
        http_client=emu.session(),
    )


def _claims(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[1]))


def _token_post(emu, **form):
    data = {
        "grant_type": "client_credentials",
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "scope": "https://graph.microsoft.com/.default",
        **form,
    }
    return emu.session().post(f"{emu.authority}/oauth2/v2.0/token", data=data, timeout=10)


def test_discovery_document(emulator):
    r = emulator.session().get(f"{emulator.authority}/v2.0/.well-known/openid-configuration")
    assert r.status_code == 200
    doc = r.json()
    base = f"{emulator.base_url}/{emulator.tenant_id}"
    assert doc["issuer"] == f"{base}/v2.0"
    assert doc["token_endpoint"] == f"{base}/oauth2/v2.0/token"
    assert doc["authorization_endpoint"] == f"{base}/oauth2/v2.0/authorize"
    assert doc["token_endpoint"].startswith("https://")


def test_msal_client_credentials_and_cache(emulator):
    app = _app(emulator)
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
    assert result["token_source"] == "identity_provider"
    assert result["expires_in"] == 3599
    claims = _claims(result["access_token"])
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["tid"] == emulator.tenant_id
    assert claims["appid"] == emulator.client_id
    assert claims["exp"] - claims["iat"] == 3599
    assert set(claims["roles"]) == {
        "User.Read.All",
        "Mail.ReadWrite",
        "Mail.Send",
        "Chat.Read.All",
        "ChannelMessage.Read.All",
    }
    again = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert again["token_source"] == "cache"


def test_success_body_shape(emulator):
    r = _token_post(emulator)
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599 and body["ext_expires_in"] == 3599
    assert "refresh_token" not in body
    assert body["access_token"].count(".") == 2


def _assert_aad(r, status, error, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}:")
    for key in ("timestamp", "trace_id", "correlation_id", "error_uri"):
        assert key in body


def test_invalid_secret_7000215(emulator):
    _assert_aad(_token_post(emulator, client_secret="wrong"), 401, "invalid_client", 7000215)
    result = _app(emulator, secret="wrong").acquire_token_for_client(
        ["https://graph.microsoft.com/.default"]
    )
    assert result["error"] == "invalid_client" and result["error_codes"] == [7000215]


def test_missing_secret_7000218(emulator):
    _assert_aad(_token_post(emulator, client_secret=""), 401, "invalid_client", 7000218)


def test_unknown_app_700016(emulator):
    _assert_aad(
        _token_post(emulator, client_id="00000000-1111-2222-3333-444444444444"),
        400,
        "unauthorized_client",
        700016,
    )


def test_unknown_tenant_90002(emulator):
    r = emulator.session().post(
        f"{emulator.base_url}/no-such-tenant/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    _assert_aad(r, 400, "invalid_request", 90002)


def test_scope_without_default_is_invalid_scope(emulator):
    _assert_aad(
        _token_post(emulator, scope="https://graph.microsoft.com/User.Read.All"),
        400,
        "invalid_scope",
        1002012,
    )


def test_several_secrets_and_rotation(emulator):
    ctl = emulator.control
    new = ctl.add_secret(emulator.client_id)
    assert _token_post(emulator).status_code == 200
    assert _token_post(emulator, client_secret=new["secretText"]).status_code == 200
    # remove the original secret: old value now fails, new one keeps working
    old_key = next(
        s["keyId"] for s in ctl.secrets(emulator.client_id) if s["keyId"] != new["keyId"]
    )
    ctl.remove_secret(emulator.client_id, old_key)
    _assert_aad(_token_post(emulator), 401, "invalid_client", 7000215)
    assert _token_post(emulator, client_secret=new["secretText"]).status_code == 200


def test_expired_secret_7000222(emulator):
    ctl = emulator.control
    s = ctl.add_secret(
        emulator.client_id, value="short-lived-secret-value-123", expires_in_seconds=60
    )
    assert _token_post(emulator, client_secret=s["secretText"]).status_code == 200
    ctl.advance_clock(120)
    _assert_aad(
        _token_post(emulator, client_secret=s["secretText"]), 401, "invalid_client", 7000222
    )
    # marking expired explicitly
    s2 = ctl.add_secret(emulator.client_id)
    ctl.expire_secret(emulator.client_id, s2["keyId"])
    _assert_aad(
        _token_post(emulator, client_secret=s2["secretText"]), 401, "invalid_client", 7000222
    )


@pytest.mark.parametrize("status", [429, 503])
def test_token_endpoint_faults(emulator, status):
    emulator.control.inject_fault(
        path="/oauth2/v2.0/token", kind="status", status=status, retry_after=2, count=1
    )
    r = _token_post(emulator)
    assert r.status_code == status
    assert r.headers["Retry-After"] == "2"
    assert _token_post(emulator).status_code == 200


def test_msal_raises_on_503(emulator):
    emulator.control.inject_fault(path="/oauth2/v2.0/token", kind="503", count=1)
    with pytest.raises(msal.exceptions.MsalServiceError):
        _app(emulator).acquire_token_for_client(["https://graph.microsoft.com/.default"])


def test_graph_rejects_bad_and_expired_tokens(emulator):
    s = emulator.session()
    users = f"{emulator.graph_url}/users"
    r = s.get(users)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "InvalidAuthenticationToken"
    r = s.get(users, headers={"Authorization": "Bearer abc.def.ghi"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "InvalidAuthenticationToken"
    token = emulator.token()
    assert s.get(users, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    emulator.control.advance_clock(3600)
    r = s.get(users, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert "expired" in r.json()["error"]["message"]


def test_missing_role_is_403(emulator):
    ctl = emulator.control
    other = ctl.create_app(roles=["Mail.Read"])
    token = emulator.token(other["client_id"], other["client_secret"])
    s = emulator.session()
    s.headers["Authorization"] = f"Bearer {token}"
    r = s.get(f"{emulator.graph_url}/users")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "Authorization_RequestDenied"
    ctl.set_roles(emulator.client_id, ["User.Read.All"])
    s.headers["Authorization"] = f"Bearer {emulator.token()}"
    r = s.get(f"{emulator.graph_url}/users/maria.kowalski@fleetdemo.onmicrosoft.com/messages")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "ErrorAccessDenied"
    err = r.json()["error"]
    assert set(err["innerError"]) >= {"date", "request-id", "client-request-id"}
