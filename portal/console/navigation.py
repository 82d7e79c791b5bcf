"""The console's navigation: each entry shows only to roles that may use it."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme


@dataclass(frozen=True)
class NavItem:
    label: str
    url_name: str
    permission: str


NAV_ITEMS: tuple[NavItem, ...] = (
    NavItem("Dashboard", "console:dashboard", "view_console"),
    NavItem("Alerts", "console:alerts", "view_console"),
    NavItem("Subscriptions", "console:subscriptions", "view_console"),
    NavItem("Users & sync", "console:sync_users", "view_console"),
    NavItem("Jobs", "console:jobs", "view_console"),
    NavItem("Messages", "console:messages", "view_messages"),
    NavItem("Graph calls", "console:graph_calls", "view_console"),
    NavItem("Verify", "console:verify", "verify_integration"),
    NavItem("Settings", "console:settings", "view_console"),
    NavItem("Credentials", "console:credentials", "view_secrets_metadata"),
    NavItem("API tokens", "console:tokens", "manage_api_tokens"),
    NavItem("People", "console:people", "manage_users"),
    NavItem("Service clients", "console:service_clients", "manage_service_clients"),
    NavItem("Event endpoints", "console:event_endpoints", "manage_event_endpoints"),
    NavItem("Recovery", "console:recovery", "run_recovery"),
    NavItem("Audit log", "console:audit", "view_audit"),
    NavItem("Django admin", "admin:index", "use_django_admin"),
)


def visible_items(user: object, current_path: str) -> list[dict[str, object]]:
    items = []
    for item in NAV_ITEMS:
        if not user.has_perm(f"access.{item.permission}"):  # type: ignore[attr-defined]
            continue
        try:
            url = reverse(item.url_name)
        except NoReverseMatch:
            continue
        active = current_path == url or (url != "/" and current_path.startswith(url))
        items.append({"label": item.label, "url": url, "active": active})
    return items


def redirect_back(request: HttpRequest, fallback: str) -> HttpResponse:
    """Back to the page a form came from (its `next` field), only ever within the portal.

    Django's check, not a prefix test: browsers read `/\\evil.com` as `//evil.com`.
    """
    target = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = fallback
    return redirect(target)
