"""Service clients: admins create, rotate (a new token, the old one kept for an overlap) and
revoke the Fleet services' API principals. A new token is shown once, in that response."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.access import service_clients
from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.access.models import ServiceClient
from portal.access.roles import SCOPES


class ClientForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="e.g. fleet-api, dispatch-worker")
    description = forms.CharField(max_length=300, required=False)
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in SCOPES], widget=forms.CheckboxSelectMultiple
    )
    expires_days = forms.IntegerField(
        min_value=1,
        max_value=service_clients.MAX_EXPIRY_DAYS,
        initial=service_clients.DEFAULT_EXPIRY_DAYS,
    )


class RotateForm(forms.Form):
    grace_hours = forms.IntegerField(
        min_value=0,
        max_value=service_clients.MAX_GRACE_HOURS,
        initial=service_clients.DEFAULT_GRACE_HOURS,
    )


def _page(
    request: HttpRequest,
    form: ClientForm,
    created: str = "",
    created_for: str = "",
    status: int = 200,
) -> HttpResponse:
    response = render(
        request,
        "console/service_clients.html",
        {
            "form": form,
            "rotate_form": RotateForm(),
            "created": created,
            "created_for": created_for,
            "scopes": SCOPES,
            "clients": ServiceClient.objects.prefetch_related("tokens").order_by("name")[:500],
        },
        status=status,
    )
    if created:
        response["Cache-Control"] = "no-store"
    return response


@require_GET
@requires("manage_service_clients")
def client_list(request: HttpRequest) -> HttpResponse:
    return _page(request, ClientForm())


@require_POST
@requires("manage_service_clients")
def client_create(request: HttpRequest) -> HttpResponse:
    form = ClientForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    data = form.cleaned_data
    try:
        client, raw = service_clients.create_client(
            Actor.from_request(request),
            data["name"],
            data["scopes"],
            data["description"],
            data["expires_days"],
        )
    except service_clients.ServiceClientError as exc:
        form.add_error(None, str(exc))
        return _page(request, form, status=400)
    return _page(request, ClientForm(), created=raw, created_for=client.name)


@require_POST
@requires("manage_service_clients")
def client_rotate(request: HttpRequest, name: str) -> HttpResponse:
    form = RotateForm(request.POST)
    if not form.is_valid():
        messages.error(
            request,
            f"The overlap must be a whole number of hours (0-{service_clients.MAX_GRACE_HOURS}).",
        )
        return redirect("console:service_clients")
    try:
        _token, raw = service_clients.rotate_client(
            Actor.from_request(request), name, form.cleaned_data["grace_hours"]
        )
    except service_clients.ServiceClientError as exc:
        messages.error(request, str(exc))
        return redirect("console:service_clients")
    return _page(request, ClientForm(), created=raw, created_for=name)


@require_POST
@requires("manage_service_clients")
def client_revoke(request: HttpRequest, name: str) -> HttpResponse:
    try:
        service_clients.revoke_client(Actor.from_request(request), name)
    except service_clients.ServiceClientError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Service client {name} is revoked; its tokens stop now.")
    return redirect("console:service_clients")
