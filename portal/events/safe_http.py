"""SSRF-safe POSTs to event endpoints (URLs that admins and API clients type in).

- https only, unless DEBUG;
- the host name is resolved once and every address checked: loopback, private, link-local
  (cloud metadata at 169.254.169.254), multicast, reserved and unspecified addresses, and
  the IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4), are refused unless inside
  EVENT_ENDPOINT_ALLOWED_NETWORKS;
- the connection goes to the checked address (pinned: no second lookup an attacker's DNS
  could answer differently), with the original name for Host, SNI and certificate checks;
- redirects are never followed, the response body is read up to RESPONSE_CAP bytes, and
  connect/read timeouts are short;
- one wall-clock deadline (EVENT_DELIVERY_DEADLINE_SECONDS) bounds the whole exchange:
  connect, TLS handshake, sending, the answer's headers and body. A read timeout alone does
  not: a receiver that drips a byte every few seconds restarts it with each byte. At the
  deadline the connection's socket is shut down from a timer thread, which ends whatever
  read or write is blocked on it at once;
- connections are kept alive between deliveries: one pool per endpoint host *and checked
  address*, so a reused connection always goes where the latest check allowed, and a name
  that now resolves elsewhere gets a new pool (and a new check) instead. A response longer
  than the cap closes its connection rather than leaving unread bytes on it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
import urllib3.connection
import urllib3.util.ssl_
from django.conf import settings

RESPONSE_CAP = 4096
MAX_POOLS = 64  # per process; the least recently used pool beyond this is closed
BLOCKED_NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
        "::ffff:0:0/96",
        "64:ff9b::/96",
        # 6to4 (RFC 3056): the next 32 bits are an IPv4 address (2002:7f00:1:: is 127.0.0.1,
        # 2002:a9fe:a9fe:: the cloud metadata address) that a relay may route to.
        "2002::/16",
    )
]


class UnsafeUrl(ValueError):
    """The URL may not be delivered to (the message says why)."""


class DeadlineExceeded(urllib3.exceptions.TimeoutError):
    """The endpoint did not answer completely within the delivery's deadline."""


class _Deadline:
    """A wall-clock limit on one POST. The connection registers its socket (`watch`) as soon
    as it has one; at expiry the timer shuts that socket down."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._socket = sock
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._socket is not None:
                _shut(self._socket)

    def __enter__(self) -> _Deadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._socket = None  # the connection may outlive this delivery (keep-alive)
        _current.deadline = None


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for a TLS one (whose own would drop its state under
    # the thread reading it): both directions end, the blocked call returns. OSError: closed.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_current = threading.local()  # the deadline of the delivery this thread is sending


def _watch(sock: socket.socket | None) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)  # a kept-alive connection (a new one registers as it connects)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)


class _WatchedSSLSocket(ssl.SSLSocket):
    """Registers itself before its handshake, which a dripping server could stretch too."""

    def do_handshake(self, block: bool = False) -> None:
        _watch(self)
        super().do_handshake(block)


def _tls_context() -> ssl.SSLContext:
    context = urllib3.util.ssl_.create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.sslsocket_class = _WatchedSSLSocket
    return context


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked IP the connection is pinned to


@dataclass(frozen=True)
class Reply:
    status: int
    excerpt: str
    duration_ms: int


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in settings.EVENT_ENDPOINT_ALLOWED_NETWORKS]


def check_address(address: str) -> None:
    ip = ipaddress.ip_address(address)
    if any(ip in network for network in _allowed_networks()):
        return
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if (
        any(ip in network for network in BLOCKED_NETWORKS)
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        raise UnsafeUrl(
            f"{address} is a private, loopback, link-local or reserved address; "
            "add its network to EVENT_ENDPOINT_ALLOWED_NETWORKS to allow it."
        )


def check_url(url: str) -> tuple[str, str, int, str]:
    """Syntax and scheme: (scheme, host, port, path). No DNS."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("Not a valid URL.") from None
    if parts.scheme not in ("https", "http"):
        raise UnsafeUrl("Endpoint URLs must start with https://.")
    if parts.scheme == "http" and not settings.DEBUG:
        raise UnsafeUrl("Endpoint URLs must use https (http only with DEBUG on).")
    if not parts.hostname or parts.username or parts.password:
        raise UnsafeUrl("Endpoint URLs need a host name and no user:password part.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def resolve(url: str) -> Target:
    """Check the URL and every address its host resolves to; pin the first."""
    scheme, host, port, path = check_url(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"{host} does not resolve: {exc}") from None
    # For a host name the resolver answers IPv4/IPv6 addresses, each given as text first.
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UnsafeUrl(f"{host} does not resolve.")
    for address in addresses:  # one bad address taints the name (DNS rebinding)
        check_address(address)
    return Target(scheme, host, port, path, addresses[0])


_POOLS: OrderedDict[tuple[str, str, int, str, str | None], urllib3.HTTPConnectionPool] = (
    OrderedDict()
)
_POOLS_LOCK = threading.Lock()


def _pool(target: Target) -> urllib3.HTTPConnectionPool:
    """The keep-alive pool for this checked target (created on first use)."""
    ca_certs = settings.EVENT_ENDPOINT_CA_BUNDLE or None
    key = (target.scheme, target.host, target.port, target.address, ca_certs)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is not None:
            _POOLS.move_to_end(key)
            return pool
        # One connection per pool: a worker process sends one delivery at a time.
        if target.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                target.address,
                port=target.port,
                retries=False,
                maxsize=1,
                block=False,
                server_hostname=target.host,
                assert_hostname=target.host,
                cert_reqs="CERT_REQUIRED",
                ca_certs=ca_certs,
                ssl_context=_tls_context(),
            )
            pool.ConnectionCls = _WatchedHTTPSConnection
        else:
            pool = urllib3.HTTPConnectionPool(
                target.address, port=target.port, retries=False, maxsize=1, block=False
            )
            pool.ConnectionCls = _WatchedHTTPConnection
        _POOLS[key] = pool
        while len(_POOLS) > MAX_POOLS:
            _POOLS.popitem(last=False)[1].close()
    return pool


def close_pools() -> None:
    with _POOLS_LOCK:
        while _POOLS:
            _POOLS.popitem()[1].close()


def post(url: str, body: bytes, headers: dict[str, str]) -> Reply:
    """POST to the pinned, checked address within the delivery deadline. Raises UnsafeUrl,
    DeadlineExceeded or urllib3 errors."""
    target = resolve(url)  # on every delivery: DNS may have changed since the last one
    timeout = urllib3.Timeout(
        connect=float(settings.EVENT_CONNECT_TIMEOUT),
        read=float(settings.EVENT_READ_TIMEOUT),
    )
    pool = _pool(target)
    host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    started = time.monotonic()
    whole = False
    with _Deadline(float(settings.EVENT_DELIVERY_DEADLINE_SECONDS)) as deadline:
        try:
            response = pool.urlopen(
                "POST",
                target.path,
                body=body,
                headers={**headers, "Host": host_header},
                timeout=timeout,
                redirect=False,
                preload_content=False,
                assert_same_host=False,
            )
            try:
                excerpt = response.read(RESPONSE_CAP, decode_content=False)
                # The body ended within the cap (and nothing of a declared length is left).
                whole = len(excerpt) < RESPONSE_CAP and not response.length_remaining
            finally:
                if not whole or deadline.expired:
                    response.close()  # unread bytes would poison the next request on it
                response.release_conn()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if deadline.expired:
                raise DeadlineExceeded(
                    f"no complete answer within {deadline.seconds:g} s "
                    "(EVENT_DELIVERY_DEADLINE_SECONDS)"
                ) from exc
            raise
        if deadline.expired:  # the last byte came as the timer fired: the socket is shut
            raise DeadlineExceeded(f"no complete answer within {deadline.seconds:g} s")
    return Reply(
        response.status,
        excerpt[:RESPONSE_CAP].decode("utf-8", "replace")[:500],
        int((time.monotonic() - started) * 1000),
    )
