"""The Django admin, for the admin role only (use_django_admin), with denials audited."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse

from portal.access.actors import Actor
from portal.access.authz import require
from portal.access.decorators import needs_second_factor, second_factor_redirect
from portal.access.request_types import OTPHttpRequest

_View = TypeVar("_View", bound=Callable[..., Any])


class PortalAdminSite(admin.AdminSite):
    site_header = "Fleet Graph Portal — administration"
    site_title = "Fleet Graph Portal admin"
    index_title = "Data"

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and user.has_perm("access.use_django_admin"))

    def login(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        # One sign-in page for the whole portal (with its throttling and audit).
        return redirect_to_login(request.GET.get("next", self.name + ":index"), settings.LOGIN_URL)

    def admin_view(self, view: _View, cacheable: bool = False) -> _View:
        inner = super().admin_view(view, cacheable)

        @wraps(inner)
        def guarded(request: OTPHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.user.is_authenticated:
                if needs_second_factor(request):
                    return second_factor_redirect(request)
                require(
                    Actor.from_request(request),
                    "use_django_admin",
                    action="access.view",
                    target_type="url",
                    target_id=request.path,
                )
            return inner(request, *args, **kwargs)

        guarded.required_permission = "use_django_admin"  # type: ignore[attr-defined]
        # functools.wraps made `guarded` stand for `view` (same arguments), as AdminSite's own
        # admin_view promises with this signature.
        return cast(_View, guarded)
