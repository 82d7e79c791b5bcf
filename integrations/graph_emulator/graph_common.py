"""Shared plumbing for the Graph (``/v1.0``) route modules."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from .host import EmulatorHost
from .httptypes import GraphError, Request, Response, json_response
from .identity import Principal

_PAREN_RE = re.compile(r"^([^()]+)\('?(.*?)'?\)$")


@dataclass
class Ctx:
    app: EmulatorHost
    req: Request
    principal: Principal
    params: dict[str, str]
    segments: list[str]

    @property
    def state(self):
        return self.app.state

    @property
    def query(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.req.query.items()}

    def body_json(self) -> dict[str, Any]:
        try:
            data = self.req.json()
        except (ValueError, UnicodeError) as exc:
            raise GraphError(
                400,
                "BadRequest",
                "Unable to read JSON request payload. Please "
                "ensure Content-Type header is set and payload is of valid JSON "
                "format.",
            ) from exc
        if data is None:
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        if not isinstance(data, dict):
            raise GraphError(400, "BadRequest", "Invalid request body: a JSON object is expected.")
        return _camel_keys(data)


Handler = Callable[[Ctx], Response]


@dataclass
class Route:
    method: str
    pattern: list[str]
    handler: Handler
    mailbox_param: str | None = None
    teams_post: bool = False
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _camel_keys(value: Any) -> Any:
    """Graph matches property names case-insensitively; SDKs may send `Message`,
    `SaveToSentItems`: PascalCase keys become the camelCase the handlers read."""
    if isinstance(value, dict):
        return {
            (k[0].lower() + k[1:] if isinstance(k, str) and k[:1].isupper() else k): _camel_keys(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value


def normalize_segments(segments: list[str]) -> list[str]:
    """``mailFolders('inbox')`` -> ``mailFolders``, ``inbox``."""
    out: list[str] = []
    for seg in segments:
        m = _PAREN_RE.match(seg)
        if m and not seg.startswith("19:"):
            out.append(m.group(1))
            if m.group(2):  # `delta()` is the function call `delta` (as SDKs write it)
                out.append(m.group(2))
        else:
            out.append(seg)
    return out


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: Handler, **kw: Any) -> None:
        self.routes.append(Route(method, [p for p in path.split("/") if p], handler, **kw))

    def resolve(self, method: str, segments: list[str]) -> tuple[Route, dict[str, str]]:
        method_mismatch = False
        best_depth = 0
        for route in self.routes:
            if len(route.pattern) != len(segments):
                continue
            params: dict[str, str] = {}
            ok = True
            for i, (pat, seg) in enumerate(zip(route.pattern, segments, strict=True)):
                if pat.startswith("{"):
                    params[pat[1:-1]] = seg
                elif pat.lower() != seg.lower():
                    ok = False
                    best_depth = max(best_depth, i)
                    break
            if not ok:
                continue
            if route.method != method:
                method_mismatch = True
                continue
            return route, params
        if method_mismatch:
            raise GraphError(
                405,
                "Request_BadRequest",
                "Specified HTTP method is not allowed for the request target.",
            )
        bad = segments[min(best_depth, len(segments) - 1)] if segments else ""
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{bad}'.")


# --------------------------------------------------------------------------- permissions


def require(
    ctx: Ctx,
    app_perms: tuple[str, ...],
    delegated_perms: tuple[str, ...],
    code: str = "ErrorAccessDenied",
    message: str = "Access is denied. Check credentials and try again.",
    status: int = 403,
) -> None:
    p = ctx.principal
    perms = delegated_perms if p.delegated else app_perms
    if not perms or not p.has_any(*perms):
        raise GraphError(status, code, message)


def raise_if_throttled(ctx: Ctx, rejection: Any) -> None:
    """Answer a throttler's rejection as Graph does: 429 with an integer Retry-After."""
    if rejection is not None:
        ctx.app.mark_throttled(ctx)
        raise GraphError(
            429, rejection.code, rejection.message, {"Retry-After": str(rejection.retry_after)}
        )


# What Graph answers an app whose Teams protected-API request was not approved (observed).
PROTECTED_API = (
    "Invoked API requires Protected API access in application-only context when "
    "not using Resource Specific Consent. Visit "
    "https://docs.microsoft.com/en-us/graph/teams-protected-apis for more details."
)


def require_protected_api(ctx: Ctx) -> None:
    """Teams chat/channel message reads (lists, getAllMessages, delta) and subscriptions to
    them are protected APIs in application-only context: Microsoft must have approved the
    app (https://learn.microsoft.com/graph/teams-protected-apis). Delegated calls are not."""
    p = ctx.principal
    if p.delegated:
        return
    app = ctx.state.apps.get(p.app_id)
    if app is not None and not app.protected_api:
        raise GraphError(403, "Forbidden", PROTECTED_API)


def require_directory(ctx: Ctx) -> None:
    require(
        ctx,
        (
            "User.Read.All",
            "User.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
            "User.ReadBasic.All",
        ),
        ("User.Read", "User.ReadBasic.All", "User.Read.All", "Directory.Read.All"),
        code="Authorization_RequestDenied",
        message="Insufficient privileges to complete the operation.",
    )


# --------------------------------------------------------------------------- paging


def encode_skiptoken(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return "RFNwdAIAAQAAA" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skiptoken(token: str) -> dict[str, Any]:
    try:
        body = token.removeprefix("RFNwdAIAAQAAA")
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return data
    except (ValueError, UnicodeError) as exc:
        raise GraphError(
            400,
            "Directory_ExpiredPageToken",
            "The specified page token value has expired and can no longer be "
            "included in your request.",
        ) from exc


def next_link(ctx: Ctx, replace: dict[str, str]) -> str:
    """Absolute link to the current path with query options replaced."""
    pairs = [
        (k, v)
        for k, v in parse_qsl(ctx.req.query_string, keep_blank_values=True)
        if k.lower() not in {r.lower() for r in replace}
    ]
    pairs.extend(replace.items())
    return ctx.app.graph_url + ctx.req.path[len("/v1.0") :] + "?" + urlencode(pairs)


def collection(
    ctx: Ctx,
    context: str,
    items: list[dict[str, Any]],
    next_url: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"@odata.context": f"{ctx.app.graph_url}/$metadata#{context}"}
    if extra:
        body.update(extra)
    body["value"] = items
    if next_url:
        body["@odata.nextLink"] = next_url
    return json_response(200, body, headers)


def entity(
    ctx: Ctx,
    context: str,
    obj: dict[str, Any],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    return json_response(
        status, {"@odata.context": f"{ctx.app.graph_url}/$metadata#{context}", **obj}, headers
    )


def user_or_404(ctx: Ctx, ident: str) -> dict[str, Any]:
    user = ctx.state.resolve_user(ident)
    if user is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{ident}' does not exist or one of its queried "
            "reference-property objects are not present.",
        )
    return user
