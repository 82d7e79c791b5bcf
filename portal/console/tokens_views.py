"""API tokens: admins create (the value is shown once) and revoke them."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.access import api_tokens
from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.access.models import BearerToken
from portal.access.roles import PERMISSIONS


class TokenForm(forms.Form):
    user = forms.ModelChoiceField(
        queryset=get_user_model().objects.none(), to_field_name="username"
    )
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. 'on-call scripts'.")
    scopes = forms.MultipleChoiceField(
        required=False,
        choices=list(PERMISSIONS.items()),
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: whatever the user's role allows.",
    )
    expires_days = forms.IntegerField(
        min_value=1, max_value=api_tokens.MAX_EXPIRY_DAYS, initial=api_tokens.DEFAULT_EXPIRY_DAYS
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # `user` is declared above as a ModelChoiceField; `fields` only knows it as a Field.
        user_field = cast(forms.ModelChoiceField, self.fields["user"])
        user_field.queryset = get_user_model().objects.filter(is_active=True).order_by("username")


def _page(
    request: HttpRequest, form: TokenForm, created: str = "", status: int = 200
) -> HttpResponse:
    return render(
        request,
        "console/tokens.html",
        {
            "form": form,
            "created": created,
            "tokens": BearerToken.objects.of_people().select_related("user").order_by("-id")[:200],
        },
        status=status,
    )


@require_GET
@requires("manage_api_tokens")
def token_list(request: HttpRequest) -> HttpResponse:
    return _page(request, TokenForm())


@require_POST
@requires("manage_api_tokens")
def token_create(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    data = form.cleaned_data
    try:
        _token, raw = api_tokens.create_token(
            Actor.from_request(request),
            data["user"].username,
            data["name"],
            data["scopes"],
            data["expires_days"],
        )
    except api_tokens.TokenError as exc:
        form.add_error(None, str(exc))
        return _page(request, form, status=400)
    # Shown once, in this response only; never stored, never in a redirect or a message.
    response = _page(request, TokenForm(), created=raw)
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@requires("manage_api_tokens")
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    try:
        token = api_tokens.revoke_token(Actor.from_request(request), token_id)
    except api_tokens.TokenError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Token {token.prefix}… is revoked; it stops working now.")
    return redirect("console:tokens")
