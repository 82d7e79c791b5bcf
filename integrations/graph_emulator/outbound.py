"""Outgoing HTTP (validation handshakes, notifications) with the URL policy."""

from __future__ import annotations

import ipaddress
import os
import threading
from typing import Any
from urllib.parse import urlsplit

import requests

from .config import Config

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SYSTEM_CA_CANDIDATES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)

_local = threading.local()


def _session() -> requests.Session:
    s = getattr(_local, "session", None)
    if s is None:
        s = requests.Session()
        s.trust_env = False  # never pick up proxies / CA bundles from the environment
        _local.session = s
    return s


# Opt-in for a local receiver (the demo, tests): http and loopback notification URLs.
LOCAL_RECEIVER_CONFIG = {
    "subscriptions": {"allow_http_notification_urls": True, "allow_local_notification_urls": True}
}


def _is_local(host: str) -> bool:
    if host in LOOPBACK or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name: public as far as this check goes
    return not address.is_global


def url_problem(url: str, config: Config) -> str | None:
    """Why Graph would refuse this notification URL (``None`` if acceptable)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "The notification URL is not a valid absolute URL."
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        return "The Notification Url must be an absolute HTTPS URL."
    cfg = config.section("subscriptions")
    if parts.scheme == "http" and not (cfg["allow_http_notification_urls"] and host in LOOPBACK):
        return "Subscription validation request failed. Notification URL must use HTTPS."
    if _is_local(host) and not cfg["allow_local_notification_urls"]:
        return (
            "Subscription validation request failed. Notification endpoint must respond with "
            f"200 OK to validation request. ({host} is a loopback or private address that "
            "Microsoft Graph cannot reach.)"
        )
    if host not in LOOPBACK and not cfg["allow_remote_notification_urls"]:
        return (
            "The emulator only calls loopback notification URLs (set "
            "subscriptions.allow_remote_notification_urls to allow others)."
        )
    return None


def _verify(config: Config) -> Any:
    cfg = config.section("subscriptions")
    if not cfg["verify_tls"]:
        return False
    if cfg["ca_bundle"]:
        return cfg["ca_bundle"]
    for path in SYSTEM_CA_CANDIDATES:
        if os.path.exists(path):
            return path
    return True


def post(
    url: str, config: Config, *, data: bytes, content_type: str, timeout: float
) -> requests.Response:
    return _session().post(
        url,
        data=data,
        headers={"Content-Type": content_type, "User-Agent": "Microsoft-Graph-Emulator"},
        timeout=timeout,
        verify=_verify(config),
        allow_redirects=False,
    )
