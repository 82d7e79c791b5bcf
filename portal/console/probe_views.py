"""The end-to-end probe: is it set up, what the latest probes measured, run one now."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from integrations.microsoft import probe
from integrations.microsoft.models import Probe
from portal.access.actors import Actor
from portal.access.decorators import requires


@require_GET
@requires("view_console")
def probe_page(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "console/probe.html",
        {
            "problem": probe.setup_problem(),
            "mailbox": probe.mailbox(),
            "sender": probe.sender(),
            "teams_chat": probe.teams_chat(),
            "interval": settings.PROBE_INTERVAL_MINUTES,
            "timeout": settings.PROBE_NOTIFICATION_TIMEOUT_MINUTES,
            "channels": [
                (Probe.Channel(channel).label, figures)
                for channel, figures in Probe.objects.figures_by_channel().items()
            ],
            "probes": Probe.objects.all()[:20],
            "can_run": request.user.has_perm("access.verify_integration"),
        },
    )


@require_POST
@requires("verify_integration")
def probe_run(request: HttpRequest) -> HttpResponse:
    try:
        sent = probe.run_now(Actor.from_request(request))
    except probe.ProbeNotSetUp as exc:
        messages.error(request, str(exc))
    else:
        what = " and ".join(p.get_channel_display().lower() for p in sent)
        messages.success(request, f"Probe queued ({what}): a worker sends it now.")
    return redirect("console:probe")
