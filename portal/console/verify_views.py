"""Verify integration: the `manage.py verify_integration` checklist, on demand, in HTML.

The run happens in the request that asked for it, outside any transaction (no database lock
is held while checks wait on the network), with every check bounded by the chosen timeout.
The web server serves other pages from its other threads meanwhile; the page itself renders
at once and shows the latest runs from the audit log.
"""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from integrations.microsoft import verify
from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.audit.models import AuditEvent
from portal.console.htmx import HtmxHttpRequest

TIMEOUT_CHOICES = [
    ("5", "5 seconds per check"),
    ("10", "10 seconds per check"),
    ("20", "20 seconds per check"),
]


class VerifyForm(forms.Form):
    timeout = forms.TypedChoiceField(
        choices=TIMEOUT_CHOICES, coerce=int, initial="5", label="Wait at most"
    )


def _context(request: HttpRequest, form: VerifyForm, results: list | None) -> dict:
    return {
        "form": form,
        "results": results,
        "failed": [r for r in results if not r.ok] if results is not None else [],
        "checks": [
            c.__name__.removeprefix("check_").replace("_", " ").capitalize() for c in verify.CHECKS
        ],
        "history": AuditEvent.objects.filter(action="integration.verify")
        .exclude(outcome="denied")
        .order_by("-id")[:8],
    }


@require_GET
@requires("verify_integration")
def verify_page(request: HttpRequest) -> HttpResponse:
    return render(request, "console/verify.html", _context(request, VerifyForm(), None))


@require_POST
@requires("verify_integration")
def verify_run(request: HtmxHttpRequest) -> HttpResponse:
    form = VerifyForm(request.POST)
    if not form.is_valid():
        template = "console/verify.html#results" if request.htmx else "console/verify.html"
        return render(request, template, _context(request, form, None), status=400)
    results = verify.verify_integration(
        Actor.from_request(request), timeout=form.cleaned_data["timeout"]
    )
    template = "console/verify.html#results" if request.htmx else "console/verify.html"
    return render(request, template, _context(request, form, results))
