from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.admin import AdminSite
from django.contrib.auth import logout
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render, resolve_url
from django_htmx.http import HttpResponseClientRedirect

from portal.access import sso

logger = logging.getLogger(__name__)

SESSION_STARTED_KEY = "portal_session_started"
SESSION_ACTIVE_KEY = "portal_session_active"
# Live-refresh polling marks its requests with this header: they are not a person's activity
# and must not keep an unattended session alive (the console's polling elements send it).
POLL_HEADER = "X-Portal-Poll"


def is_poll(request: HttpRequest) -> bool:
    return request.headers.get(POLL_HEADER) == "1"


def view_permission(view_func: Callable[..., Any]) -> str | None:
    """What a resolved view declares (None: nothing, which means it is refused)."""
    declared = getattr(view_func, "required_permission", None)
    if declared is not None:
        return declared
    # Admin URLs are wrapped by AdminSite/ModelAdmin (marked with admin_site or model_admin)
    # and guarded at call time by PortalAdminSite.admin_view (use_django_admin, audited).

    bound_to = getattr(view_func, "__self__", None)
    is_admin_site_page = isinstance(bound_to, AdminSite) or isinstance(
        getattr(view_func, "admin_site", None), AdminSite
    )
    if is_admin_site_page and getattr(view_func, "__name__", "") in {"login", "logout"}:
        return "public"  # admin sign-in sends people to the portal's sign-in page
    if (
        getattr(view_func, "admin_site", None) is not None
        or getattr(view_func, "model_admin", None) is not None
        or isinstance(bound_to, AdminSite)
    ):
        return "use_django_admin"
    return None


class DenyByDefaultMiddleware:
    """Refuse any view that does not declare a permission (fail closed)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Callable[..., Any], *args: Any) -> None:
        if view_permission(view_func) is None:
            logger.error("View %s declares no permission; refused", view_func)
            raise PermissionDenied("This page declares no permission and is closed.")


class SessionLifetimeMiddleware:
    """End a session SESSION_MAX_HOURS after sign-in, however active it is, and
    SESSION_IDLE_MINUTES after the person's last request (polling requests do not count,
    although they renew the cookie)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            started = request.session.get(SESSION_STARTED_KEY)
            active = request.session.get(SESSION_ACTIVE_KEY)
            now = time.time()
            if started is None:
                request.session[SESSION_STARTED_KEY] = now
            if (started is not None and now - started > settings.SESSION_MAX_HOURS * 3600) or (
                active is not None and now - active > settings.SESSION_IDLE_MINUTES * 60
            ):
                logout(request)
            elif not is_poll(request):
                request.session[SESSION_ACTIVE_KEY] = now
        return self.get_response(request)


class EntraRoleRecheckMiddleware:
    """Re-ask Entra (silent refresh) what an SSO session may do every SSO_ROLE_RECHECK_MINUTES:
    a role removed or an account disabled in Entra ends the session; a changed role applies."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated and sso.recheck_due(request):
            why = sso.recheck(request)
            if why:
                logout(request)
                if request.headers.get("HX-Request"):  # a fragment swap: go to the sign-in page
                    return HttpResponseClientRedirect(resolve_url(settings.LOGIN_URL))
                return render(
                    request,
                    "registration/sso_refused.html",
                    {
                        "message": "Your portal access was re-checked with Microsoft Entra ID and "
                        "has ended (your role was removed or your account disabled). "
                        "Sign in again if you think that is wrong."
                    },
                    status=403,
                )
        return self.get_response(request)
