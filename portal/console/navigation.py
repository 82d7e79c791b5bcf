"""The console's navigation: groups of entries, each entry shown only to roles that may use it.

The groups are what fits one row at 1280 px; a group with one entry the person may open shows
that entry as a plain link. To add a page, add a NavItem to the group it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import NoReverseMatch, Resolver404, resolve, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from portal.approvals.models import ApprovalRequest


@dataclass(frozen=True)
class NavItem:
    label: str
    url_name: str
    permission: str
    badge: Callable[[], int] | None = None  # a count shown beside the label (0: none)


@dataclass(frozen=True)
class NavGroup:
    label: str
    items: tuple[NavItem, ...]


NAV_GROUPS: tuple[NavGroup, ...] = (
    NavGroup(
        "Overview",
        (
            NavItem("Dashboard", "console:dashboard", "view_console"),
            NavItem("Alerts", "console:alerts", "view_console"),
        ),
    ),
    NavGroup(
        "Integration",
        (
            NavItem("Subscriptions", "console:subscriptions", "view_console"),
            NavItem("Users & sync", "console:sync_users", "view_console"),
            NavItem("Graph calls", "console:graph_calls", "view_console"),
            NavItem("Verify", "console:verify", "verify_integration"),
            NavItem("Credentials", "console:credentials", "view_secrets_metadata"),
        ),
    ),
    NavGroup(
        "Work",
        (
            NavItem("Jobs", "console:jobs", "view_console"),
            NavItem("Recovery", "console:recovery", "run_recovery"),
            NavItem(
                "Approvals",
                "approvals:list",
                "view_console",
                badge=lambda: ApprovalRequest.objects.pending().count(),
            ),
        ),
    ),
    NavGroup(
        "Fleet gateway",
        (
            NavItem("Messages", "console:messages", "view_messages"),
            NavItem("Event endpoints", "console:event_endpoints", "manage_event_endpoints"),
            NavItem("Service clients", "console:service_clients", "manage_service_clients"),
            NavItem("API tokens", "console:tokens", "manage_api_tokens"),
        ),
    ),
    NavGroup(
        "Admin",
        (
            NavItem("Settings", "console:settings", "view_console"),
            NavItem("Audit log", "console:audit", "view_audit"),
            NavItem("People", "console:people", "manage_users"),
            NavItem("Django admin", "admin:index", "use_django_admin"),
        ),
    ),
)


def visible_groups(user: object, current_path: str) -> list[dict[str, object]]:
    """The groups the person sees, each with its entries; `active` marks the current page's
    entry and its group (the longest matching URL wins, so /jobs/5/ marks Jobs)."""
    groups: list[dict[str, object]] = []
    for nav_group in NAV_GROUPS:
        items = []
        waiting = 0  # the group's badge: its entries' badges together
        for item in nav_group.items:
            if not user.has_perm(f"access.{item.permission}"):  # type: ignore[attr-defined]
                continue
            try:
                url = reverse(item.url_name)
            except NoReverseMatch:
                continue
            badge = item.badge() if item.badge else 0
            waiting += badge
            items.append({"label": item.label, "url": url, "active": False, "badge": badge})
        if items:
            groups.append(
                {"label": nav_group.label, "items": items, "active": False, "badge": waiting}
            )
    current = _current_item(groups, current_path)
    if current is not None:
        current_group, current_item = current
        current_group["active"] = current_item["active"] = True
    return groups


def _current_item(
    groups: list[dict[str, object]], current_path: str
) -> tuple[dict[str, object], dict[str, object]] | None:
    best: tuple[dict[str, object], dict[str, object]] | None = None
    best_length = -1
    for group in groups:
        for item in group["items"]:  # type: ignore[attr-defined]
            url = str(item["url"])
            matches = current_path == url or (url != "/" and current_path.startswith(url))
            if matches and len(url) > best_length:
                best, best_length = (group, item), len(url)
    return best


def visible_items(user: object, current_path: str) -> list[dict[str, object]]:
    """Every entry the person sees, in the navigation's order."""
    return [
        item
        for group in visible_groups(user, current_path)
        for item in group["items"]  # type: ignore[attr-defined]
    ]


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


def may_open(user: object, url: str) -> bool:
    """Whether `user` may open the console page at `url` (its view's required permission)."""
    try:
        view = resolve(url.split("#")[0].split("?")[0]).func
    except Resolver404:
        return False
    permission = getattr(view, "required_permission", None)
    return permission is not None and user.has_perm(f"access.{permission}")  # type: ignore[attr-defined]
