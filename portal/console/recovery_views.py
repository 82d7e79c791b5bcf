"""Recovery: the runbook's "Complete System Recovery" as a guided page (see recovery.py)."""

from __future__ import annotations

import re

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.audit.models import AuditEvent
from portal.console.htmx import HtmxHttpRequest
from portal.recovery import services as recovery

CONFIRM_WORD = "RECOVER"
SESSION_ID = re.compile(r"^recovery-[0-9a-f]{16}$")


class StartForm(forms.Form):
    reset_sync = forms.BooleanField(
        required=False, label="Include the optional “reset sync state” step"
    )
    confirm = forms.CharField(max_length=20, label=f"Type {CONFIRM_WORD} to start")

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"].strip()
        if value != CONFIRM_WORD:
            raise forms.ValidationError(f"Type {CONFIRM_WORD} (capitals) to start.")
        return value


class StepForm(forms.Form):
    step = forms.ChoiceField(choices=[(k, k) for k in recovery.STEP_KEYS])
    skip = forms.BooleanField(required=False)


@require_GET
@requires("run_recovery")
def recovery_page(request: HttpRequest) -> HttpResponse:
    recent = (
        AuditEvent.objects.filter(target_type=recovery.TARGET, action="recovery.start")
        .exclude(outcome=AuditEvent.Outcome.DENIED)
        .order_by("-id")[:10]
    )
    return render(
        request,
        "console/recovery.html",
        {
            "form": StartForm(),
            "steps": recovery.STEPS,
            "recent": recent,
            "confirm_word": CONFIRM_WORD,
        },
    )


@require_POST
@requires("run_recovery")
def recovery_start(request: HttpRequest) -> HttpResponse:
    form = StartForm(request.POST)
    if not form.is_valid():
        recent = AuditEvent.objects.filter(
            target_type=recovery.TARGET, action="recovery.start"
        ).order_by("-id")[:10]
        return render(
            request,
            "console/recovery.html",
            {"form": form, "steps": recovery.STEPS, "recent": recent, "confirm_word": CONFIRM_WORD},
            status=400,
        )
    session_id = recovery.start(
        Actor.from_request(request), reset_sync=form.cleaned_data["reset_sync"]
    )
    return redirect("console:recovery_session", session_id=session_id)


def _state_or_404(session_id: str) -> recovery.SessionState:
    state = recovery.load(session_id) if SESSION_ID.match(session_id) else None
    if state is None or not state.exists:
        raise Http404("There is no such recovery session.")
    return state


def _rows(state: recovery.SessionState) -> list[dict]:
    runnable = recovery._next_runnable(state) if state.finished is None else None
    rows = []
    for number, step in enumerate(recovery.STEPS, start=1):
        result = state.results.get(step.key)
        rows.append(
            {
                "number": number,
                "step": step,
                "result": result,
                "is_next": step.key == runnable,
                "suggest_skip": step.optional and not state.reset_sync,
            }
        )
    return rows


@require_GET
@requires("run_recovery")
def recovery_session(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    state = _state_or_404(session_id)
    context = {
        "state": state,
        "rows": _rows(state),
        "events": AuditEvent.objects.filter(request_id=session_id).order_by("id")[:200],
    }
    template = (
        "console/recovery_session.html#steps" if request.htmx else "console/recovery_session.html"
    )
    return render(request, template, context)


@require_POST
@requires("run_recovery")
def recovery_step(request: HttpRequest, session_id: str) -> HttpResponse:
    state = _state_or_404(session_id)
    form = StepForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a step.")
        return redirect("console:recovery_session", session_id=state.session_id)
    try:
        result = recovery.run_step(
            Actor.from_request(request),
            state.session_id,
            form.cleaned_data["step"],
            skip=form.cleaned_data["skip"],
        )
    except recovery.RecoveryError as exc:
        messages.error(request, str(exc))
    else:
        title = next(s.title for s in recovery.STEPS if s.key == result.key)
        if result.skipped:
            messages.info(request, f"“{title}” skipped.")
        elif result.ok:
            messages.success(request, f"“{title}” done.")
        else:
            messages.error(
                request, f"“{title}” failed: see its result below. Fix the cause and run it again."
            )
    return redirect("console:recovery_session", session_id=state.session_id)
