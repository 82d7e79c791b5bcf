"""Graph's webhook endpoints skip the browser-facing middleware (the inbox is the
queue, at the speed of one insert)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from portal.api import webhook_urls


class WebhookFastPathMiddleware:
    """Answer /api/webhooks/<mail|teams|lifecycle> from here, below the security headers
    and the request id but above sessions, CSRF, authentication, MFA, idle timeout, role
    recheck, messages, htmx, deny-by-default and axes: the receiver uses none of them (it is
    public, sets no cookie, and each notification proves itself with its clientState), and
    together they cost the hot path more CPU than its INSERT. The views are the same ones
    the URLconf routes to (portal/api/webhook_urls.py)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._routes: dict[str, Callable[[HttpRequest], HttpResponse]] | None = None

    def _views(self) -> dict[str, Callable[[HttpRequest], HttpResponse]]:
        if self._routes is None:  # reverse() needs the URLconf: built at the first request
            self._routes = {
                reverse(f"api:{pattern.name}"): pattern.callback
                for pattern in webhook_urls.urlpatterns
            }
        return self._routes

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = self._views().get(request.path_info)
        if view is None:
            return self.get_response(request)
        return view(request)
