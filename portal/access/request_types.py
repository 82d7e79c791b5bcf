"""The request type of the sign-in views, which say how a person signed in."""

from __future__ import annotations

from django.http import HttpRequest


class SignInHttpRequest(HttpRequest):
    """A request that signs someone in: `request.sign_in_method` (a LastSignIn.Method value) is
    set before `login()`, and the user_logged_in receiver records it."""

    sign_in_method: str
