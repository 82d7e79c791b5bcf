"""Every view declares who may use it; DenyByDefaultMiddleware refuses views that do not."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, resolve_url
from django.urls import reverse
from django_htmx.http import HttpResponseClientRedirect

from portal.access.actors import Actor
from portal.access.authz import require
from portal.access.request_types import OTPHttpRequest
from portal.access.sso import entra_mfa_trusted

PUBLIC = "public"
# Views answer any response: a page, a redirect, a streamed CSV export.
ViewFunc = Callable[..., HttpResponseBase]
_View = TypeVar("_View", bound=ViewFunc)


def requires(codename: str) -> Callable[[ViewFunc], ViewFunc]:
    """Allow the view to people (or tokens) holding `access.<codename>`; 403 and audit others."""

    def decorator(view: ViewFunc) -> ViewFunc:
        @wraps(view)
        def wrapped(request: OTPHttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            has_token = getattr(request, "bearer_token", None) is not None
            if not has_token and not request.user.is_authenticated:
                if getattr(request, "htmx", False):
                    return HttpResponseClientRedirect(resolve_url(settings.LOGIN_URL))
                return redirect_to_login(request.get_full_path())
            if not has_token and needs_second_factor(request):
                return second_factor_redirect(request)
            require(
                Actor.from_request(request),
                codename,
                action="access.view",
                target_type="url",
                target_id=request.path,
            )
            return view(request, *args, **kwargs)

        wrapped.required_permission = codename  # type: ignore[attr-defined]
        return wrapped

    return decorator


def needs_second_factor(request: OTPHttpRequest) -> bool:
    return (
        bool(settings.REQUIRE_MFA)
        and not request.user.is_verified()
        and not entra_mfa_trusted(request)
    )


def second_factor_redirect(request: HttpRequest) -> HttpResponse:
    target = reverse("second_factor") + "?" + urlencode({"next": request.get_full_path()})
    if getattr(request, "htmx", False):
        return HttpResponseClientRedirect(target)
    return redirect(target)


def public(view: _View) -> _View:
    """Mark a view as open to everyone (it must authenticate callers itself if it needs to)."""
    view.required_permission = PUBLIC  # type: ignore[attr-defined]
    return view
