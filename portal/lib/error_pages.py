"""Error pages: JSON under /api/, HTML elsewhere."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Any) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"error": "not_found", "detail": f"No API endpoint at {request.path}."}, status=404
        )
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"error": "server_error", "detail": "Something went wrong on our side; it was logged."},
            status=500,
        )
    return defaults.server_error(request)
