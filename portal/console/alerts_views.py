"""Alerts: what fires now, its history, acknowledge and snooze."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.alerts import services
from portal.alerts.models import Alert, AlertEvent
from portal.alerts.rules import RULES, Rule
from portal.console.navigation import may_open


@dataclass(frozen=True)
class AlertRow:
    rule: Rule
    alert: Alert | None
    fix_url: str  # "" when this person may not open the page that fixes it


@require_GET
@requires("view_console")
def alerts_page(request: HttpRequest) -> HttpResponse:
    services.evaluate_if_overdue()
    alerts = {alert.rule: alert for alert in Alert.objects.all()}
    rows = [
        AlertRow(
            rule,
            alerts.get(rule.name),
            str(rule.link) if may_open(request.user, str(rule.link)) else "",
        )
        for rule in RULES
    ]
    rows.sort(key=lambda row: (row.alert is None or row.alert.state != "firing", row.rule.name))
    return render(
        request,
        "console/alerts.html",
        {
            "rows": rows,
            "history": AlertEvent.objects.all()[:30],
            "can_acknowledge": request.user.has_perm("access.acknowledge_alerts"),
            "can_snooze_security": request.user.has_perm("access.snooze_security_alerts"),
            "now": timezone.now(),
        },
    )


@require_POST
@requires("acknowledge_alerts")
def alert_action(request: HttpRequest, rule: str) -> HttpResponse:
    actor = Actor.from_request(request)
    try:
        if request.POST.get("action") == "snooze":
            try:
                minutes = int(request.POST.get("minutes", ""))
            except ValueError:
                raise services.AlertError("Choose how long to snooze.") from None
            services.snooze(actor, rule, minutes, request.POST.get("reason", "").strip())
            messages.success(
                request,
                f"{rule} snoozed for {minutes} minutes: it stays on "
                "this page but sends no notifications.",
            )
        else:
            services.acknowledge(actor, rule)
            messages.success(request, f"{rule} acknowledged.")
    except (services.AlertError, PermissionDenied) as exc:  # the denial is audited
        messages.error(request, str(exc))
    return redirect("console:alerts")
