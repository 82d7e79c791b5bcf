"""The request types of the access views: what our middleware and django-otp's add to a request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

    # django-otp's OTPMiddleware gives every request.user, signed in or not, an
    # `is_verified()` method (True once a device verified this session). These two
    # classes only describe that for mypy; they never exist at run time.
    class _OTPUser(User):
        def is_verified(self) -> bool: ...

    class _OTPAnonymousUser(AnonymousUser):
        def is_verified(self) -> bool: ...


class OTPHttpRequest(HttpRequest):
    """A request that passed django-otp's OTPMiddleware (installed for every request)."""

    user: _OTPUser | _OTPAnonymousUser


class SignInHttpRequest(HttpRequest):
    """A request that signs someone in: `request.sign_in_method` (a LastSignIn.Method value) is
    set before `login()`, and the user_logged_in receiver records it."""

    sign_in_method: str
