"""The console's navigation for every page (base.html): items the person may open, their role.

A console concern, so it lives here; portal.access knows no screen.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from portal.access.actors import role_of
from portal.console.navigation import visible_groups


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_groups": [], "portal_role": "", "tenant_label": _tenant_label()}
    return {
        "nav_groups": visible_groups(user, request.path),
        "portal_role": role_of(user),
        "tenant_label": _tenant_label(),
    }


def _tenant_label() -> str:
    return settings.TENANT_LABEL or ""
