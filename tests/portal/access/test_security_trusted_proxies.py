"""Client addresses behind a reverse proxy.

Found: with TRUST_X_FORWARDED_FOR on (as deploy/k8s had it) the portal believed the left-most
X-Forwarded-For entry from any peer, so any caller could claim 127.0.0.1 and read /metrics and
/api/metrics/* without a token, forge the address in audit rows, and — since django-axes saw
only the proxy's address — lock out any account for everyone.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from axes.helpers import get_client_ip_address
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory
from django.urls import reverse

from portal.access.addresses import client_ip
from portal.audit.models import AuditEvent
from portal.lib.env import env_networks
from tests.conftest import PERSONA_PASSWORD

PROXY = "10.0.0.5"  # the ingress controller, inside TRUSTED_PROXIES
PROXY_NETWORK = "10.0.0.0/24"


@pytest.fixture
def behind_proxy(settings):
    # The old deployment's switch stays set: the fix must not depend on it being gone.
    settings.TRUST_X_FORWARDED_FOR = True
    settings.TRUSTED_PROXIES = [PROXY_NETWORK]
    settings.API_TRUSTED_NETWORKS = ["127.0.0.1/32", "::1/128"]
    return settings


# --- the reproduction, as found -------------------------------------------------------------


@pytest.mark.django_db
def test_reproduction_anyone_claiming_localhost_reads_the_metrics(client, behind_proxy):
    spoofed = {"HTTP_X_FORWARDED_FOR": "127.0.0.1"}
    # straight from the internet, and through the proxy (which appends the real address)
    assert client.get("/api/metrics/queue", REMOTE_ADDR="203.0.113.9", **spoofed).status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9", **spoofed).status_code == 401
    through_proxy = {"HTTP_X_FORWARDED_FOR": "127.0.0.1, 203.0.113.9"}
    assert client.get("/api/metrics/queue", REMOTE_ADDR=PROXY, **through_proxy).status_code == 401
    assert client.get("/metrics", REMOTE_ADDR=PROXY, **through_proxy).status_code == 401


@pytest.mark.django_db
def test_reproduction_a_caller_cannot_forge_its_audit_address(client, behind_proxy, sam_support):
    client.post(
        reverse("login"),
        {"username": "sam-support", "password": "wrong"},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR="192.0.2.1, 198.51.100.7",
    )
    client.post(
        reverse("login"),
        {"username": "sam-support", "password": "wrong"},
        REMOTE_ADDR="198.51.100.8",
        HTTP_X_FORWARDED_FOR="192.0.2.1",
    )
    addresses = list(
        AuditEvent.objects.filter(action="auth.login", outcome="failure")
        .order_by("id")
        .values_list("ip", flat=True)
    )
    assert addresses == ["198.51.100.7", "198.51.100.8"]


def sign_in(client, password, real_address, spoof=""):
    forwarded = f"{spoof}, {real_address}" if spoof else real_address
    return client.post(
        reverse("login"),
        {"username": "sam-support", "password": password},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=forwarded,
    )


@pytest.mark.django_db
def test_reproduction_an_attacker_cannot_lock_a_user_out_everywhere(
    client, behind_proxy, sam_support
):
    for _ in range(behind_proxy.AXES_FAILURE_LIMIT):
        sign_in(client, "wrong", "198.51.100.66")
    assert sign_in(client, PERSONA_PASSWORD, "198.51.100.66").status_code == 429
    # Sam, at another address behind the same proxy, still signs in.
    assert sign_in(client, PERSONA_PASSWORD, "192.0.2.10").status_code == 302


@pytest.mark.django_db
def test_a_spoofed_left_hop_does_not_escape_the_lockout(client, behind_proxy, sam_support):
    for attempt in range(behind_proxy.AXES_FAILURE_LIMIT):
        sign_in(client, "wrong", "198.51.100.66", spoof=f"192.0.2.{attempt + 1}")
    assert (
        sign_in(client, PERSONA_PASSWORD, "198.51.100.66", spoof="192.0.2.200").status_code == 429
    )


@pytest.mark.django_db
def test_without_trusted_proxies_the_header_is_ignored(client, settings):
    settings.TRUSTED_PROXIES = []
    response = client.get(
        "/api/metrics/queue", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="127.0.0.1"
    )
    assert response.status_code == 401


@pytest.mark.django_db
def test_an_internal_caller_behind_the_proxy_is_still_trusted(client, settings):
    settings.TRUSTED_PROXIES = [PROXY_NETWORK]
    settings.API_TRUSTED_NETWORKS = ["192.0.2.0/24"]
    response = client.get(
        "/api/metrics/queue", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.1, 192.0.2.44"
    )
    assert response.status_code == 200


# --- the resolver ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", "127.0.0.1", "203.0.113.9"),  # untrusted peer: header ignored
        (PROXY, "", PROXY),  # proxy, no header
        (PROXY, "198.51.100.7", "198.51.100.7"),
        (PROXY, "127.0.0.1, 198.51.100.7", "198.51.100.7"),  # left entries are the client's
        (PROXY, "198.51.100.7, 10.0.0.9", "198.51.100.7"),  # two proxies in a row
        (PROXY, "10.0.0.8, 10.0.0.9", "10.0.0.8"),  # all hops trusted: left-most
        (PROXY, "198.51.100.7, not-an-address", PROXY),  # garbage: keep what we vouch for
        (PROXY, "not-an-address, 198.51.100.7", "198.51.100.7"),
        (PROXY, "[2001:db8::1]:443", "2001:db8::1"),
        (PROXY, " 2001:DB8::2 ,", "2001:db8::2"),
        ("::ffff:10.0.0.5", "198.51.100.7", "198.51.100.7"),  # IPv4-mapped peer
        ("", "198.51.100.7", ""),  # no peer address at all
    ],
)
def test_the_right_most_untrusted_hop_is_the_client(settings, peer, forwarded, expected):
    settings.TRUSTED_PROXIES = [PROXY_NETWORK]
    request = RequestFactory().get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


def test_axes_uses_the_same_resolver(settings):
    settings.TRUSTED_PROXIES = [PROXY_NETWORK]
    request = RequestFactory().get(
        "/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="127.0.0.1, 198.51.100.7"
    )
    assert get_client_ip_address(request) == "198.51.100.7"


def test_bad_networks_stop_start_up(monkeypatch):
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, ingress-nginx")
    with pytest.raises(ImproperlyConfigured, match=r"TRUSTED_PROXIES.*ingress-nginx"):
        env_networks("TRUSTED_PROXIES")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8,fd00::/8, 192.0.2.7")
    assert env_networks("TRUSTED_PROXIES") == ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]


def test_the_old_switch_stops_start_up_with_a_pointer():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "portal.settings_test",
            "TRUST_X_FORWARDED_FOR": "true",
        },
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        timeout=60,
    )
    assert result.returncode != 0
    assert "TRUSTED_PROXIES" in result.stderr
