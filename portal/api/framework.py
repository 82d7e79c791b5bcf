"""The JSON API's plumbing: bearer tokens, JSON bodies whatever the content type, JSON errors.

The runbook's curl commands send `-d '{…}'` without a Content-Type header, which curl labels
as a form; every body is therefore read as JSON, whatever it is labelled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from portal.access import credential_limits, service_clients
from portal.access.actors import Actor
from portal.access.addresses import from_api_trusted_network
from portal.access.authz import require
from portal.access.roles import PERMISSIONS
from portal.api.models import public_prefix
from portal.api.tokens import authenticate

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str = "", *,
                 retry_after: int | None = None) -> None:
        super().__init__(detail or error)
        self.status, self.error, self.detail = status, error, detail
        self.retry_after = retry_after


def error_response(status: int, error: str, detail: str = "",
                   retry_after: int | None = None) -> JsonResponse:
    response = JsonResponse({"error": error, "detail": detail}, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


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


ENDPOINTS: list[Endpoint] = []


def _bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _read_json_body(request: HttpRequest) -> dict[str, Any]:
    if int(request.headers.get("Content-Length") or 0) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"Bodies are limited to {MAX_BODY_BYTES} bytes.")
    raw = request.body
    if not raw.strip():
        return {}
    if request.content_type == "multipart/form-data" and not request.POST and not request.FILES:
        return {}  # an empty form (some clients send one for a bodiless POST)
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"The body must be a JSON object: {exc}.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    return body


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
) -> Callable[[Callable[..., Any]], Callable[..., HttpResponse]]:
    """Declare a JSON endpoint. The view gets (request, actor, body, **kwargs).

    With `trusted_network`, callers from API_TRUSTED_NETWORKS may call it without a token
    (the runbook's metrics curls do); everyone else needs a token.
    """
    if permission not in PERMISSIONS:
        raise ValueError(f"Unknown permission {permission!r}")
    ENDPOINTS.append(Endpoint(path, method, summary, permission, request_body,
                              responses or {}, query or {}, trusted_network))

    def decorator(view: Callable[..., Any]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method != method:
                response = error_response(405, "method_not_allowed",
                                          f"Use {method} for this endpoint.")
                response["Allow"] = method
                return response
            try:
                actor = _authenticate(request, trusted_network)
                require(actor, permission, action="api.call", target_type="url",
                        target_id=request.path)
                body = _read_json_body(request) if method in {"POST", "PUT", "PATCH"} else {}
                result = view(request, actor, body, *args, **kwargs)
            except ApiError as exc:
                return error_response(exc.status, exc.error, exc.detail, exc.retry_after)
            except PermissionDenied as exc:
                return error_response(403, "forbidden", str(exc))
            if isinstance(result, HttpResponse):
                return result
            return JsonResponse(result, json_dumps_params={"default": str})

        wrapped.required_permission = permission  # type: ignore[attr-defined]
        wrapped.api_endpoint = True  # type: ignore[attr-defined]
        wrapped.trusted_network = trusted_network  # type: ignore[attr-defined]
        return wrapped

    return decorator


def _too_many_failures(wait: int) -> ApiError:
    return ApiError(429, "too_many_failures",
                    f"Too many refused credentials from here; try again in {wait} s.",
                    retry_after=wait)


def _authenticate(request: HttpRequest, trusted_network: bool) -> Actor:
    # Refused credentials are counted (credential_limits), not audited one row each: an
    # unauthenticated caller must not be able to grow the append-only audit log.
    raw = _bearer(request)
    if raw is not None and raw.startswith(service_clients.CLIENT_TOKEN_PREFIX):
        wait = credential_limits.wait_before_trying(request)
        if wait:
            raise _too_many_failures(wait)
        client_token = service_clients.authenticate(raw)
        if client_token is None:
            wait = credential_limits.record_failure(
                request, token_prefix=service_clients.public_prefix(raw)
                or credential_limits.OTHER_PREFIX,
                reason="unknown, expired or revoked service-client token")
            if wait:
                raise _too_many_failures(wait)
            raise ApiError(401, "unauthorized", "The bearer token is unknown, expired or revoked.")
        request.service_client_token = client_token
        return Actor.from_request(request)
    if raw is not None:
        wait = credential_limits.wait_before_trying(request)
        if wait:
            raise _too_many_failures(wait)
        token = authenticate(raw)
        if token is None:
            wait = credential_limits.record_failure(
                request, token_prefix=public_prefix(raw) or credential_limits.OTHER_PREFIX,
                reason="unknown, expired or revoked token")
            if wait:
                raise _too_many_failures(wait)
            raise ApiError(401, "unauthorized", "The bearer token is unknown, expired or revoked.")
        request.api_token = token
        return Actor.from_request(request)
    if trusted_network and from_api_trusted_network(request):
        base = Actor.from_request(request)
        return Actor(kind="system", name=f"trusted-network:{base.ip}", role="system",
                     ip=base.ip, user_agent=base.user_agent, request_id=base.request_id)
    if request.method != "GET":
        wait = credential_limits.record_failure(request, token_prefix=None,
                                                reason="no bearer token")
        if wait:
            raise _too_many_failures(wait)
    raise ApiError(401, "unauthorized", "Send an API token: Authorization: Bearer <token>.")
