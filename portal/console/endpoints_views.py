"""Event endpoints: health (last success, failure streak, backlog), recent deliveries,
replay one or all since a time, a test event, pause/resume, rotate the signing secret.
A new secret is shown once, in that response."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.views.decorators.http import require_GET, require_POST

from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.events.endpoints import (
    EndpointError,
    create_endpoint,
    pause_endpoint,
    replay_delivery,
    replay_since,
    resume_endpoint,
    rotate_secret,
    send_test,
)
from portal.events.models import EventEndpoint
from portal.events.services import EVENT_TYPES, event_type_label


class EndpointForm(forms.Form):
    url = forms.CharField(max_length=500, label="URL (https)")
    description = forms.CharField(max_length=300, required=False)
    event_types = forms.MultipleChoiceField(
        required=False,
        choices=[(t, f"{event_type_label(t)} ({t})") for t in EVENT_TYPES if t != "test"],
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every type.",
    )


class ReplayForm(forms.Form):
    since = forms.DateTimeField(widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))


def _render(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    response = render(request, template, context, status=status)
    if context.get("secret"):
        response["Cache-Control"] = "no-store"
    return response


def _list(
    request: HttpRequest, form: EndpointForm, secret: str = "", status: int = 200
) -> HttpResponse:
    endpoints = [(e, e.backlog()) for e in EventEndpoint.objects.order_by("id")[:200]]
    return _render(
        request,
        "console/event_endpoints.html",
        {"form": form, "endpoints": endpoints, "secret": secret},
        status,
    )


@require_GET
@requires("manage_event_endpoints")
def endpoint_list(request: HttpRequest) -> HttpResponse:
    return _list(request, EndpointForm())


@require_POST
@requires("manage_event_endpoints")
def endpoint_create(request: HttpRequest) -> HttpResponse:
    form = EndpointForm(request.POST)
    if not form.is_valid():
        return _list(request, form, status=400)
    data = form.cleaned_data
    try:
        _endpoint, secret = create_endpoint(
            Actor.from_request(request), data["url"], data["event_types"], data["description"]
        )
    except EndpointError as exc:
        form.add_error(None, str(exc))
        return _list(request, form, status=400)
    return _list(request, EndpointForm(), secret=secret)


def _detail(request: HttpRequest, endpoint: EventEndpoint, secret: str = "") -> HttpResponse:
    return _render(
        request,
        "console/event_endpoint.html",
        {
            "endpoint": endpoint,
            "backlog": endpoint.backlog(),
            "secret": secret,
            "deliveries": endpoint.deliveries.order_by("-id")[:50],
            "replay_form": ReplayForm(),
        },
    )


def _endpoint_or_404(endpoint_id: int) -> EventEndpoint:
    endpoint = EventEndpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None:
        raise Http404(f"There is no event endpoint #{endpoint_id}.")
    return endpoint


@require_GET
@requires("manage_event_endpoints")
def endpoint_detail(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    return _detail(request, _endpoint_or_404(endpoint_id))


@require_POST
@requires("manage_event_endpoints")
def endpoint_action(request: HttpRequest, endpoint_id: int, action: str) -> HttpResponse:
    """pause, resume, test, rotate, replay (since a time) and replay-delivery."""
    endpoint = _endpoint_or_404(endpoint_id)
    actor = Actor.from_request(request)
    try:
        if action == "pause":
            pause_endpoint(actor, endpoint.pk, request.POST.get("reason", "")[:300])
            messages.success(request, "Paused: events wait as the backlog.")
        elif action == "resume":
            resume_endpoint(actor, endpoint.pk)
            messages.success(request, "Resumed: the backlog is being sent.")
        elif action == "test":
            delivery = send_test(actor, endpoint.pk)
            messages.success(request, f"Test event queued ({delivery.webhook_id}).")
        elif action == "rotate":
            endpoint, secret = rotate_secret(actor, endpoint.pk, 24)
            return _detail(request, endpoint, secret=secret)
        elif action == "replay":
            form = ReplayForm(request.POST)
            if not form.is_valid():
                messages.error(request, "Give the time to replay from.")
            else:
                count = replay_since(actor, endpoint.pk, form.cleaned_data["since"])
                messages.success(
                    request,
                    f"{count} deliver{pluralize(count, 'y,ies')} {'is' if count == 1 else 'are'} "
                    "being sent again.",
                )
        elif action == "replay-delivery":
            delivery = replay_delivery(actor, request.POST.get("delivery", ""))
            messages.success(request, f"{delivery.webhook_id} is being sent again.")
        else:
            raise Http404(f"No action {action!r}.")
    except EndpointError as exc:
        messages.error(request, str(exc))
    return redirect("console:event_endpoint", endpoint_id=endpoint.pk)
