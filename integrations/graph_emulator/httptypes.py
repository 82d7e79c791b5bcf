"""Transport-independent request/response types and small shared helpers.

The HTTP server converts each incoming request into a :class:`Request`, the
routing layers return a :class:`Response`.  ``$batch`` re-uses the same
pipeline for inner requests, which is why nothing here touches sockets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

JSON_CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"


class Headers:
    """Case-insensitive header mapping (keeps the last value per name)."""

    def __init__(self, items: Mapping[str, str] | list[tuple[str, str]] | None = None) -> None:
        self._d: dict[str, tuple[str, str]] = {}
        if items:
            pairs = items.items() if isinstance(items, Mapping) else items
            for k, v in pairs:
                self[k] = v

    def __setitem__(self, key: str, value: str) -> None:
        self._d[key.lower()] = (key, str(value))

    def __getitem__(self, key: str) -> str:
        return self._d[key.lower()][1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._d

    def get(self, key: str, default: str | None = None) -> str | None:
        item = self._d.get(key.lower())
        return item[1] if item else default

    def items(self) -> list[tuple[str, str]]:
        return list(self._d.values())

    def to_dict(self) -> dict[str, str]:
        return dict(self._d.values())


@dataclass
class Request:
    method: str
    path: str  # raw path, percent-encoded, without query string
    query_string: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    peer: str = "127.0.0.1"
    is_batch_inner: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    @property
    def segments(self) -> list[str]:
        return [unquote(s) for s in self.path.split("/") if s != ""]

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: Headers = field(default_factory=Headers)
    # Special actions the socket layer must perform instead of answering.
    reset_connection: bool = False
    # Filled in by the pipeline for the request log.
    meta: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def json_response(
    status: int,
    obj: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str = JSON_CONTENT_TYPE,
) -> Response:
    h = Headers(headers or {})
    h["Content-Type"] = content_type
    return Response(status, json.dumps(obj).encode("utf-8"), h)


def empty_response(status: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, b"", Headers(headers or {}))


def text_response(
    status: int,
    text: str,
    content_type: str = "text/plain; charset=utf-8",
    headers: Mapping[str, str] | None = None,
) -> Response:
    h = Headers(headers or {})
    h["Content-Type"] = content_type
    return Response(status, text.encode("utf-8"), h)


class GraphError(Exception):
    """Raised by Graph handlers; rendered as Graph's error body."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def graph_error_body(
    code: str, message: str, request_id: str, client_request_id: str, now: datetime
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": iso(now, ms=False),
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        }
    }


# --------------------------------------------------------------------------- time


def iso(dt: datetime, ms: bool = True) -> str:
    """UTC ISO-8601 the way Graph writes it (``2024-05-01T10:00:00.123Z`` / no fraction)."""
    dt = dt.astimezone(UTC)
    if ms:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> datetime:
    """Parse an ISO-8601 timestamp; naive values are taken as UTC."""
    v = value.strip()
    if v.endswith("Z") or v.endswith("z"):
        v = v[:-1] + "+00:00"
    # Python 3.11 accepts up to 6 fraction digits; Graph clients may send 7.
    if "." in v:
        head, _, rest = v.partition(".")
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        v = head + "." + (frac[:6] or "0") + rest[i:]
    dt = datetime.fromisoformat(v)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


# --------------------------------------------------------------------------- ids / encoding


def new_guid() -> str:
    return str(uuid.uuid4())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    pad = "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(text + pad)


def opaque_token(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)


def jwt_encode(claims: dict[str, Any], key: bytes, kid: str = "emulator") -> str:
    header = {"typ": "JWT", "alg": "HS256", "kid": kid}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    sig = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def jwt_decode(token: str, key: bytes) -> dict[str, Any] | None:
    """Return the claims of an HS256 token signed with ``key``; ``None`` if invalid."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        expected = hmac.new(
            key, (parts[0] + "." + parts[1]).encode("ascii"), hashlib.sha256
        ).digest()
        if not hmac.compare_digest(expected, b64url_decode(parts[2])):
            return None
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, UnicodeError):
        return None
    return claims if isinstance(claims, dict) else None
