"""The JSON API's plumbing: bearer tokens, JSON bodies whatever the content type, JSON errors.

The runbook's curl commands send `-d '{…}'` without a Content-Type header, which curl labels
as a form; every body is therefore read as JSON, whatever it is labelled.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from portal.access import bearer_tokens, credential_limits
from portal.access.actors import Actor
from portal.access.addresses import from_api_trusted_network
from portal.access.authz import require
from portal.access.roles import PERMISSIONS
from portal.api.approval_answers import answer_required
from portal.api.request_types import ApiHttpRequest
from portal.approvals.gate import ApprovalRequired

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024


class ApiError(Exception):
    """An answer other than success; `field` names the request field at fault, if one is."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str = "",
        *,
        field: str = "",
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail or error)
        self.status, self.error, self.detail, self.field = status, error, detail, field
        self.retry_after = retry_after


def error_response(
    status: int, error: str, detail: str = "", field: str = "", retry_after: int | None = None
) -> JsonResponse:
    body = {"error": error, "detail": detail}
    if field:
        body["field"] = field
    response = JsonResponse(body, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


@dataclass(frozen=True)
class Owned:
    """A resource that principals own (event endpoints, their deliveries, messages).

    `visible(actor)` is the resource's one scoping function: what that principal may see of
    it. An endpoint declaring `scope=Owned(…)` answers 404 for an id outside it, as if the
    resource did not exist (a foreign client learns nothing), before its view runs; the
    services apply the same function to what they do.
    """

    noun: str  # for the 404's detail: "There is no <noun> <id>."
    param: str  # the URL parameter that holds the id
    visible: Callable[[Actor], QuerySet[Any]]

    def require_visible(self, actor: Actor, value: Any) -> None:
        raw = str(value)
        pk = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else 0
        if not pk or not self.visible(actor).filter(pk=pk).exists():
            raise ApiError(404, "not_found", f"There is no {self.noun} {raw[:40]}.")


# Shared by everyone whose role or scopes grant the endpoint's permission (jobs, bulk
# operations, sync state): the role matrix alone decides.
TENANT_WIDE: Literal["tenant-wide"] = "tenant-wide"
Scope = Owned | Literal["tenant-wide"]


@dataclass
class Endpoint:
    path: str
    method: str
    summary: str
    permission: str
    request_body: dict[str, Any] | None = None
    responses: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    trusted_network: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    max_body_bytes: int = MAX_BODY_BYTES
    scope: Scope | None = None


ENDPOINTS: list[Endpoint] = []


def _bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _read_json_body(request: HttpRequest, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        raise ApiError(400, "invalid_request", "Content-Length is not a number.") from None
    if length > max_bytes:
        raise ApiError(413, "payload_too_large", f"Bodies are limited to {max_bytes} bytes.")
    # Django's DATA_UPLOAD_MAX_MEMORY_SIZE guards request.body; endpoints that accept more
    # (mail up to Graph's 4 MB) read the stream themselves, still capped at max_bytes.
    if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raw = request.read(max_bytes + 1)
    else:
        raw = request.body
    if len(raw) > max_bytes:
        raise ApiError(413, "payload_too_large", f"Bodies are limited to {max_bytes} bytes.")
    if not raw.strip():
        return {}
    if request.content_type == "multipart/form-data":
        try:
            if not request.POST and not request.FILES:
                return {}  # an empty form (some clients send one for a bodiless POST)
        except MultiPartParserError:
            pass  # not really multipart: read it as JSON like any other body
    try:
        body = json.loads(raw, parse_int=_parse_int, parse_constant=_Unreadable.constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"The body must be a JSON object: {exc}.") from None
    except RecursionError:
        field = _field_nested_too_deep(raw)
        raise ApiError(
            400,
            "invalid_json",
            f"{field or 'The body'}: nested more than {MAX_JSON_DEPTH} levels deep.",
            field=field,
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    _refuse_unusable_values(body)
    return body


# JSON that parses but that no field of the API can take, found before any view sees it so
# that the 400 names the field: numbers longer than any field needs (Python refuses to turn
# more than 4,300 digits into an int, and a long one costs quadratic time), NaN and Infinity
# (not JSON, RFC 8259), lone UTF-16 surrogates ("\ud800": not Unicode text, which no database
# column or UTF-8 encoder takes), and nesting deeper than any request needs (the code that
# handles a body recurses too).
MAX_INT_DIGITS = 100
MAX_JSON_DEPTH = 32
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]')


class _Unreadable:
    """A parsed value the API refuses, and why (in place of the value itself)."""

    def __init__(self, why: str) -> None:
        self.why = why

    @classmethod
    def constant(cls, name: str) -> _Unreadable:
        return cls(f"{name} is not a JSON number")


def _parse_int(text: str) -> int | _Unreadable:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return _Unreadable(f"a number of {len(text)} digits")
    return int(text)


def _key(name: str, parent: str) -> str:
    """A member's path (`a.b`); a name that is no Unicode text is refused here."""
    path = f"{parent}.{name}" if parent else name
    if _LONE_SURROGATE.search(path):
        path = path.encode("utf-8", "backslashreplace").decode("utf-8")[:100]
        raise ApiError(
            400, "invalid_field", f"{path}: a name that is not Unicode text.", field=path
        )
    return path


def _refuse_unusable_values(body: dict[str, Any]) -> None:
    """400 naming the field (`to[2]`, `a.b`) of the first value no endpoint can take; for
    nesting too deep, the top-level field it is under."""
    stack: list[tuple[str, str, Any, int]] = []
    for key, value in body.items():
        name = _key(key, "")
        stack.append((name, name, value, 1))
    while stack:
        top, path, value, depth = stack.pop()
        why = ""
        if isinstance(value, _Unreadable):
            why = value.why
        elif isinstance(value, float) and not math.isfinite(value):
            why = "a number beyond the range of a double"
        elif isinstance(value, str) and _LONE_SURROGATE.search(value):
            why = "a lone UTF-16 surrogate (\\ud800-\\udfff) is not Unicode text"
        elif isinstance(value, dict | list) and depth >= MAX_JSON_DEPTH:
            why, path = f"nested more than {MAX_JSON_DEPTH} levels deep", top
        elif isinstance(value, dict):
            stack.extend((top, _key(k, path), v, depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((top, f"{path}[{i}]", v, depth + 1) for i, v in enumerate(value))
        if why:
            raise ApiError(400, "invalid_field", f"{path}: {why}.", field=path)


def _field_nested_too_deep(raw: bytes) -> str:
    """The top-level key under which a body nests too deep for the parser ('' if none)."""
    text = raw.decode("utf-8", "replace")
    depth, key, previous = 0, "", ""
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return key
        elif token in "]}":
            depth -= 1
        elif token == ":" and depth == 1 and previous.startswith('"'):
            key = previous[1:-1][:100]
        previous = token
    return key


def api_endpoint(
    path: str,
    method: str,
    permission: str,
    summary: str,
    *,
    request_body: dict[str, Any] | None = None,
    responses: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    trusted_network: bool = False,
    headers: dict[str, str] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    scope: Scope | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., HttpResponse]]:
    """Declare a JSON endpoint. The view gets (request, actor, body, **kwargs).

    With `trusted_network`, callers from API_TRUSTED_NETWORKS may call it without a token
    (the runbook's metrics curls do); everyone else needs a token.

    An endpoint whose path names a resource (`{id}`) must say who may reach it: `scope` is the
    resource's `Owned` scoping (404 outside what the principal may see) or TENANT_WIDE. Without
    one the declaration fails at import, and the ownership walk fails on the URL.
    """
    if permission not in PERMISSIONS:
        raise ValueError(f"Unknown permission {permission!r}")
    if "{" in path and scope is None:
        raise ValueError(
            f"{method} {path} names a resource: declare scope=Owned(...) or scope=TENANT_WIDE."
        )
    if isinstance(scope, Owned) and f"{{{_camel(scope.param)}}}" not in path:
        raise ValueError(f"{method} {path} has no {{{_camel(scope.param)}}} for its scope.")
    ENDPOINTS.append(
        Endpoint(
            path,
            method,
            summary,
            permission,
            request_body,
            responses or {},
            query or {},
            trusted_network,
            headers or {},
            max_body_bytes,
            scope,
        )
    )

    def decorator(view: Callable[..., Any]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @wraps(view)
        def wrapped(request: ApiHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method != method:
                response = error_response(
                    405, "method_not_allowed", f"Use {method} for this endpoint."
                )
                response["Allow"] = method
                return response
            try:
                actor = _authenticate(request, trusted_network)
                require(
                    actor, permission, action="api.call", target_type="url", target_id=request.path
                )
                if isinstance(scope, Owned):
                    scope.require_visible(actor, kwargs[scope.param])
                body = (
                    _read_json_body(request, max_body_bytes)
                    if method in {"POST", "PUT", "PATCH"}
                    else {}
                )
                result = view(request, actor, body, *args, **kwargs)
            except ApiError as exc:
                return error_response(exc.status, exc.error, exc.detail, exc.field, exc.retry_after)
            except PermissionDenied as exc:
                return error_response(403, "forbidden", str(exc))
            except ApprovalRequired as exc:  # a covered action: file the request (202)
                return answer_required(request, actor, body, exc)
            if isinstance(result, HttpResponse):
                return result
            return JsonResponse(result, json_dumps_params={"default": str})

        wrapped.required_permission = permission  # type: ignore[attr-defined]
        wrapped.api_endpoint = True  # type: ignore[attr-defined]
        wrapped.trusted_network = trusted_network  # type: ignore[attr-defined]
        # What each method may reach (the ownership walk reads it, as by_method's).
        wrapped.method_scopes = {method: scope}  # type: ignore[attr-defined]
        return wrapped

    return decorator


def _too_many_failures(wait: int) -> ApiError:
    return ApiError(
        429,
        "too_many_failures",
        f"Too many refused credentials from here; try again in {wait} s.",
        retry_after=wait,
    )


def by_method(**views: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """One URL, several endpoints (GET lists, POST creates): dispatch on the method. Each
    view keeps its own permission (`method_permissions`, which the RBAC walk reads)."""
    methods = {method.upper(): view for method, view in views.items()}

    @csrf_exempt
    def dispatch(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        view = methods.get(request.method or "")
        if view is None:
            response = error_response(
                405, "method_not_allowed", f"Use {' or '.join(methods)} for this endpoint."
            )
            response["Allow"] = ", ".join(methods)
            return response
        return view(request, *args, **kwargs)

    first = next(iter(methods.values()))
    dispatch.required_permission = first.required_permission  # type: ignore[attr-defined]
    dispatch.method_permissions = {  # type: ignore[attr-defined]
        method: view.required_permission  # type: ignore[attr-defined]
        for method, view in methods.items()
    }
    dispatch.method_scopes = {  # type: ignore[attr-defined]
        method: view.method_scopes[method]  # type: ignore[attr-defined]
        for method, view in methods.items()
    }
    dispatch.api_endpoint = True  # type: ignore[attr-defined]
    dispatch.trusted_network = False  # type: ignore[attr-defined]
    return dispatch


def _camel(name: str) -> str:
    """endpoint_id -> endpointId: the URL pattern's parameter as the OpenAPI path names it."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _authenticate(request: ApiHttpRequest, trusted_network: bool) -> Actor:
    # Refused credentials are counted (credential_limits), not audited one row each: an
    # unauthenticated caller must not be able to grow the append-only audit log.
    raw = _bearer(request)
    if raw is not None:
        wait = credential_limits.wait_before_trying(request)
        if wait:
            raise _too_many_failures(wait)
        token = bearer_tokens.authenticate(raw)
        if token is None:
            wait = credential_limits.record_failure(
                request,
                token_prefix=bearer_tokens.public_prefix(raw) or credential_limits.OTHER_PREFIX,
                reason=(
                    "unknown, expired or revoked service-client token"
                    if bearer_tokens.is_client_value(raw)
                    else "unknown, expired or revoked token"
                ),
            )
            if wait:
                raise _too_many_failures(wait)
            raise ApiError(401, "unauthorized", "The bearer token is unknown, expired or revoked.")
        request.bearer_token = token
        return Actor.from_request(request)
    if trusted_network and from_api_trusted_network(request):
        base = Actor.from_request(request)
        return Actor(
            kind="system",
            name=f"trusted-network:{base.ip}",
            role="system",
            ip=base.ip,
            user_agent=base.user_agent,
            request_id=base.request_id,
        )
    if request.method != "GET":
        wait = credential_limits.record_failure(
            request, token_prefix=None, reason="no bearer token"
        )
        if wait:
            raise _too_many_failures(wait)
    raise ApiError(401, "unauthorized", "Send an API token: Authorization: Bearer <token>.")
