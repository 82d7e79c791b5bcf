"""Runtime settings: the runbook's `kubectl set env`, audited and effective without a restart."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.runtime import registry
from portal.runtime.models import RuntimeSetting


@require_GET
@requires("view_console")
def settings_page(request: HttpRequest) -> HttpResponse:
    rows = {row.key: row for row in RuntimeSetting.objects.all()}
    settings_list = sorted(
        (
            {
                "spec": spec,
                "value": registry.get_uncached(key),
                "row": rows.get(key),
                "is_default": key not in rows,
                "is_bool": spec.kind is bool,
            }
            for key, spec in registry.SPECS.items()
        ),
        # Grouped by purpose (the template regroups); the registry's order within a group.
        key=lambda item: item["spec"].group,
    )
    return render(
        request,
        "console/settings.html",
        {
            "settings_list": settings_list,
            "can_change": request.user.has_perm("access.change_runtime_settings"),
            "cache_seconds": int(registry.CACHE_SECONDS),
        },
    )


@require_POST
@requires("change_runtime_settings")
def settings_change(request: HttpRequest, key: str) -> HttpResponse:
    if key not in registry.SPECS:
        messages.error(request, f"There is no setting {key}.")
        return redirect("console:settings")
    try:
        value = registry.set_value(
            Actor.from_request(request),
            key,
            request.POST.get("value", ""),
            reason=request.POST.get("reason", "").strip(),
        )
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        shown = ("on" if value else "off") if isinstance(value, bool) else value
        messages.success(
            request,
            f"{registry.SPECS[key].label} is now {shown}. Every process "
            f"picks it up within {int(registry.CACHE_SECONDS)} seconds.",
        )
    return redirect("console:settings")


@require_POST
@requires("change_runtime_settings")
def settings_group_change(request: HttpRequest, group: str) -> HttpResponse:
    """One save for a group: every setting of the form at once, each change audited."""
    keys = [k for k in request.POST.getlist("keys") if k in registry.SPECS]
    raw = {}
    for key in keys:
        if registry.SPECS[key].kind is bool:
            raw[key] = "true" if request.POST.get(f"value-{key}") else "false"
        else:
            raw[key] = request.POST.get(f"value-{key}", "")
    try:
        changed = registry.set_values(
            Actor.from_request(request), raw, reason=request.POST.get("reason", "").strip()
        )
    except ValueError as exc:
        messages.error(request, f"Nothing was saved: {exc}")
        return redirect("console:settings")
    if not changed:
        messages.info(request, f"No {group} setting changed.")
    for key, value in changed.items():
        shown = ("on" if value else "off") if isinstance(value, bool) else value
        messages.success(
            request,
            f"{registry.SPECS[key].label} is now {shown}. Every process "
            f"picks it up within {int(registry.CACHE_SECONDS)} seconds.",
        )
    return redirect("console:settings")
