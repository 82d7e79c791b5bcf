"""Client assertions at the token endpoint: certificate and federated (workload identity)
credentials, checked as Entra ID checks them (signature, x5t / x5t#S256, aud, iss = sub,
exp/nbf; issuer/subject/audience of a federated credential) with Entra's error codes."""

from __future__ import annotations

import time
import uuid

import jwt
import msal
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import load_pem_x509_certificate

from integrations.microsoft import certificates

SCOPE = ["https://graph.microsoft.com/.default"]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture(scope="module")
def key_and_cert():
    return certificates.generate("fleet-portal-test", days=30)


def _msal(emu, credential, client_id=None):
    return msal.ConfidentialClientApplication(
        client_id or emu.client_id,
        client_credential=credential,
        authority=emu.authority,
        instance_discovery=False,
        http_client=emu.session(),
    )


def _thumbprints(cert_pem):
    cert = load_pem_x509_certificate(cert_pem.encode())
    return cert.fingerprint(hashes.SHA1()).hex(), cert.fingerprint(hashes.SHA256()).hex()


def _post_assertion(emu, assertion, client_id=None):
    return emu.session().post(
        f"{emu.authority}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id or emu.client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": SCOPE[0],
        },
        timeout=10,
    )


def _assertion(emu, key_pem, cert_pem, *, alg="PS256", **overrides):
    """An assertion as MSAL makes it, with one claim or header changed per test."""
    sha1, sha256 = _thumbprints(cert_pem)
    header = (
        {"x5t#S256": jwt.utils.base64url_encode(bytes.fromhex(sha256)).decode()}
        if alg == "PS256"
        else {"x5t": jwt.utils.base64url_encode(bytes.fromhex(sha1)).decode()}
    )
    now = time.time()
    claims = {
        "aud": f"{emu.authority}/oauth2/v2.0/token",
        "iss": emu.client_id,
        "sub": emu.client_id,
        "exp": now + 600,
        "iat": now,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    return jwt.encode(claims, key, algorithm=alg, headers=header)


def _code(response):
    return response.json()["error_codes"][0]


class TestCertificate:
    def test_msal_ps256_and_rs256_assertions_get_tokens(self, emulator, key_and_cert):
        key_pem, cert_pem = key_and_cert
        uploaded = emulator.control.add_certificate(emulator.client_id, cert_pem)
        assert uploaded["thumbprint"] == _thumbprints(cert_pem)[0].upper()
        # PS256 + x5t#S256 (MSAL computes the SHA-256 thumbprint from the certificate).
        ps = _msal(emulator, {"private_key": key_pem, "public_certificate": cert_pem})
        result = ps.acquire_token_for_client(SCOPE)
        assert "access_token" in result, result
        # RS256 + x5t (the SHA-1 thumbprint, as MSAL does for ADFS-era configurations).
        rs = _msal(emulator, {"private_key": key_pem, "thumbprint": uploaded["thumbprint"]})
        assert "access_token" in rs.acquire_token_for_client(SCOPE)

    def test_each_wrong_assertion_gets_entras_error_code(self, emulator, key_and_cert):
        key_pem, cert_pem = key_and_cert
        emulator.control.add_certificate(emulator.client_id, cert_pem)
        other_key, other_cert = certificates.generate("not-uploaded", days=30)
        token_endpoint = f"{emulator.authority}/oauth2/v2.0/token"
        cases = [
            # Signed by a key whose certificate the app does not have.
            (700027, _assertion(emulator, other_key, other_cert)),
            # The right thumbprint, another key's signature.
            (700027, _assertion(emulator, other_key, cert_pem)),
            (700024, _assertion(emulator, key_pem, cert_pem, exp=time.time() - 3600)),
            (700024, _assertion(emulator, key_pem, cert_pem, nbf=time.time() + 3600)),
            (700021, _assertion(emulator, key_pem, cert_pem, iss="someone-else")),
            (700021, _assertion(emulator, key_pem, cert_pem, sub="someone-else")),
            (
                700023,
                _assertion(
                    emulator,
                    key_pem,
                    cert_pem,
                    aud=token_endpoint.replace("v2.0/token", "authorize"),
                ),
            ),
            (50027, "not-a-jwt"),
        ]
        for expected, assertion in cases:
            response = _post_assertion(emulator, assertion)
            assert response.status_code in (400, 401), (expected, response.text)
            assert _code(response) == expected, response.text

    def test_accepted_variants_entra_accepts_too(self, emulator, key_and_cert):
        key_pem, cert_pem = key_and_cert
        emulator.control.add_certificate(emulator.client_id, cert_pem)
        v1 = f"{emulator.base_url}/{emulator.tenant_id}/oauth2/token"
        for assertion in (
            _assertion(emulator, key_pem, cert_pem, alg="RS256"),
            _assertion(emulator, key_pem, cert_pem, aud=v1),
            # A couple of minutes of clock skew is tolerated.
            _assertion(emulator, key_pem, cert_pem, nbf=time.time() + 60),
        ):
            response = _post_assertion(emulator, assertion)
            assert response.status_code == 200, response.text

    def test_removed_or_unknown_thumbprint_is_refused(self, emulator, key_and_cert):
        key_pem, cert_pem = key_and_cert
        uploaded = emulator.control.add_certificate(emulator.client_id, cert_pem)
        emulator.control.remove_certificate(emulator.client_id, uploaded["thumbprint"])
        app = _msal(emulator, {"private_key": key_pem, "public_certificate": cert_pem})
        result = app.acquire_token_for_client(SCOPE)
        assert result["error_codes"] == [700027]
        assert "The key was not found" in result["error_description"]

    def test_control_api_refuses_a_non_certificate(self, emulator):
        response = emulator.session().post(
            f"{emulator.base_url}/_emulator/apps/{emulator.client_id}/certificates",
            json={"certificate": "hello"},
            headers={"Authorization": f"Bearer {emulator.control_token}"},
            timeout=10,
        )
        assert response.status_code == 400 and "PEM certificate" in response.json()["error"]


class TestFederated:
    SUBJECT = "system:serviceaccount:fleet:fleet-portal"

    def _register(self, emulator, **kw):
        issued = emulator.control.workload_token(self.SUBJECT)
        emulator.control.add_federated_credential(
            emulator.client_id,
            kw.pop("issuer", issued["issuer"]),
            kw.pop("subject", self.SUBJECT),
            jwks_uri=issued["jwksUri"],
            **kw,
        )
        return issued

    def test_a_token_from_a_registered_issuer_is_a_credential(self, emulator):
        self._register(emulator)
        calls = []

        def assertion():
            calls.append(1)
            return emulator.control.workload_token(self.SUBJECT)["token"]

        app = _msal(emulator, {"client_assertion": assertion})
        result = app.acquire_token_for_client(SCOPE)
        assert "access_token" in result, result
        assert calls

    def test_inline_jwks_is_trusted_like_a_jwks_uri(self, emulator):
        issued = emulator.control.workload_token(self.SUBJECT)
        jwks = emulator.session().get(issued["jwksUri"], timeout=10).json()
        emulator.control.add_federated_credential(
            emulator.client_id, issued["issuer"], self.SUBJECT, jwks=jwks
        )
        assert _post_assertion(emulator, issued["token"]).status_code == 200

    def test_mismatches_get_70021_and_bad_tokens_700027_or_700024(self, emulator):
        self._register(emulator)
        other_subject = emulator.control.workload_token("system:serviceaccount:fleet:other")
        other_audience = emulator.control.workload_token(self.SUBJECT, audience="api://other")
        expired = emulator.control.workload_token(self.SUBJECT, lifetime_seconds=1)
        good = emulator.control.workload_token(self.SUBJECT)["token"]
        header, payload, signature = good.split(".")
        forged = f"{header}.{payload}.{signature[:-6]}AAAAAA"
        for token, code in (
            (other_subject["token"], 70021),
            (other_audience["token"], 70021),
            (forged, 700027),
        ):
            response = _post_assertion(emulator, token)
            assert _code(response) == code, response.text
        emulator.control.advance_clock(600)
        assert _code(_post_assertion(emulator, expired["token"])) == 700024

    def test_control_api_needs_issuer_subject_and_keys(self, emulator):
        for body in ({"issuer": "https://x"}, {"issuer": "https://x", "subject": "s"}):
            response = emulator.session().post(
                f"{emulator.base_url}/_emulator/apps/{emulator.client_id}/federated-credentials",
                json=body,
                headers={"Authorization": f"Bearer {emulator.control_token}"},
                timeout=10,
            )
            assert response.status_code == 400
