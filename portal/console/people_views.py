"""The people who may use the portal: role, where it comes from, last sign-in and method."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.access import users
from portal.access.actors import Actor, role_of
from portal.access.decorators import requires
from portal.access.roles import ROLES


def _rows() -> list[dict[str, object]]:
    people = (
        get_user_model()
        .objects.select_related("entra_account", "last_sign_in")
        .prefetch_related("groups")
        .order_by("username")
    )
    return [
        {
            "user": person,
            "role": role_of(person),
            "entra": getattr(person, "entra_account", None),
            "last": getattr(person, "last_sign_in", None),
        }
        for person in people
    ]


def _page(request: HttpRequest, error: str = "", status: int = 200) -> HttpResponse:
    return render(
        request,
        "console/people.html",
        {"rows": _rows(), "roles": ROLES, "error": error},
        status=status,
    )


@require_GET
@requires("manage_users")
def people(request: HttpRequest) -> HttpResponse:
    return _page(request)


@require_POST
@requires("manage_users")
def person_role(request: HttpRequest, username: str) -> HttpResponse:
    try:
        users.set_role(Actor.from_request(request), username, request.POST.get("role", ""))
    except users.UserError as exc:
        return _page(request, error=str(exc), status=400)
    return redirect("console:people")
