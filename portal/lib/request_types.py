"""The request type of code that runs after the portal's own middleware."""

from __future__ import annotations

from django.http import HttpRequest


class IdentifiedHttpRequest(HttpRequest):
    """A request that passed RequestIdMiddleware: `request.request_id` correlates its log lines,
    audit events and the X-Request-ID answer header."""

    request_id: str
