"""A covered action refused by the gate inside a page becomes the approval request form.

Console pages and Django admin actions call services; when one raises ApprovalRequired, the
person sees what needs approval and files the request with a reason (or, as an admin, breaks
glass) instead of an error. The JSON API answers in portal.api.framework instead.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from portal.approvals.gate import ApprovalRequired
from portal.approvals.views import request_form


class ApprovalRequiredMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, ApprovalRequired):
            return None
        return request_form(request, exception)
