from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

from portal.lib.logging import request_id_var
from portal.lib.request_types import IdentifiedHttpRequest

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestIdMiddleware:
    """Give every request an id (the caller's X-Request-ID when it is sane) for correlation."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: IdentifiedHttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request.request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request.request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request.request_id
        return response


def content_security_policy(*form_targets: str) -> str:
    """The portal's policy. No inline scripts anywhere (htmx and its helpers are static files);
    inline styles are allowed for the widths of progress bars and chart bars. No form posts off
    the portal (Sign in with Microsoft is a link, and Entra's own pages post back to us under
    Entra's policy, not ours) — except to `form_targets`: browsers apply form-action to the
    redirects that follow a submission too, so a page whose form answers with a redirect to
    the identity platform (connecting the Teams sender) names that origin."""
    form_action = " ".join(["'self'", *form_targets])
    return (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
        f"form-action {form_action}"
    )


CONTENT_SECURITY_POLICY = content_security_policy()


class ContentSecurityPolicyMiddleware:
    """Send a Content-Security-Policy on every HTML page (Django 5.2 has none built in)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html"):
            response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response


class VaryOnHtmxMiddleware:
    """`Vary: HX-Request` on every HTML answer: a URL answers a fragment to htmx and a page to a
    navigation, so no cache (the browser's back/forward included) may give one for the other."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html"):
            patch_vary_headers(response, ("HX-Request",))
        return response
