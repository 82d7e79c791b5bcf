"""The second sign-in step: enrol an authenticator app, or enter its code."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView, redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache

from portal.access import credential_limits, mfa, sso
from portal.access.backends import is_break_glass, password_allowed
from portal.access.decorators import public
from portal.access.request_types import OTPHttpRequest, SignInHttpRequest
from portal.access.sso import entra_mfa_trusted


def _next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return "/"


@public  # needs a signed-in user (checked below); it is the step before any permission
@never_cache  # the set-up page carries the authenticator's secret: never stored anywhere
def second_factor(request: OTPHttpRequest) -> HttpResponse:
    user = request.user
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if user.is_verified() or entra_mfa_trusted(request):
        return redirect(_next(request))
    enrolled = mfa.confirmed_device(user) is not None
    error = ""
    if request.method == "POST":
        token = request.POST.get("token", "")
        check = mfa.verify if enrolled else mfa.confirm_enrollment
        error = check(request, token)
        if not error:
            return redirect(_next(request))
    may_enrol = enrolled or mfa.may_enrol(request)
    context = {
        "enrolled": enrolled,
        "may_enrol": may_enrol,
        "error": error,
        "next": _next(request),
        "issuer": settings.OTP_TOTP_ISSUER,
        "no_link": mfa.NO_LINK,
    }
    if not may_enrol:
        return render(
            request, "registration/second_factor.html", context, status=400 if error else 403
        )
    if not enrolled:
        device = mfa.pending_device(user)
        context["qr"] = mfa.qr_code_data_uri(device)
        context["secret"] = device.config_url.split("secret=")[1].split("&")[0]
    return render(request, "registration/second_factor.html", context, status=400 if error else 200)


@public  # needs the account's own signed-in session (checked below)
@never_cache
def mfa_enrol(request: HttpRequest, token: str) -> HttpResponse:
    """The one-time authenticator set-up link an admin made (`portal_user enrol-link`)."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    problem = mfa.accept_enrol_link(request, token)
    if problem:
        return render(
            request,
            "registration/second_factor.html",
            {
                "link_error": problem,
                "enrolled": False,
                "may_enrol": False,
                "no_link": mfa.NO_LINK,
                "next": "/",
            },
            status=400,
        )
    return redirect("second_factor")


SSO_ONLY_MESSAGE = (
    "Sign in with Microsoft: password sign-in is kept for named break-glass accounts only."
)


class PortalAuthenticationForm(AuthenticationForm):
    """Username + password. With SSO_ONLY, refused up front for every name but the
    break-glass accounts (whether the name exists or not). Otherwise a Microsoft sign-in
    account fails like a wrong password: the form never tells apart a name that signs in
    with Microsoft from one nobody has, and it costs the same password hash."""

    def clean(self) -> dict:
        username = (self.cleaned_data.get("username") or "").strip()
        if username and settings.SSO_ENABLED and settings.SSO_ONLY:
            account = get_user_model().objects.filter(username__iexact=username).first()
            allowed = password_allowed(account) if account else is_break_glass(username)
            if not allowed:
                raise forms.ValidationError(SSO_ONLY_MESSAGE, code="sso_only")
        return super().clean()


def too_many_sign_ins(request: HttpRequest, wait: int) -> HttpResponse:
    """429 for an address past LOGIN_ADDRESS_FAILURE_LIMIT (its attempt was not looked at)."""
    response = render(
        request,
        "registration/too_many_sign_ins.html",
        {"minutes": max(1, -(-wait // 60))},
        status=429,
    )
    response["Retry-After"] = str(wait)
    return response


class PortalLoginView(LoginView):
    authentication_form = PortalAuthenticationForm
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        wait = credential_limits.wait_before_signing_in(request)
        if wait:
            return too_many_sign_ins(request, wait)
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: object) -> dict:
        context = super().get_context_data(**kwargs)
        context.update(
            sso_enabled=sso.enabled(), sso_only=settings.SSO_ENABLED and settings.SSO_ONLY
        )
        return context


def _refused(request: HttpRequest, refused: sso.SignInRefused) -> HttpResponse:
    return render(
        request,
        "registration/sso_refused.html",
        {"message": refused.message},
        status=refused.status,
    )


@public  # the start of a sign-in
def sign_in_with_microsoft(request: HttpRequest) -> HttpResponse:
    if not sso.enabled():
        return render(
            request,
            "registration/sso_refused.html",
            {"message": "Sign-in with Microsoft is not switched on here."},
            status=404,
        )
    try:
        return redirect(sso.begin(request, _next(request)))
    except sso.SignInRefused as refused:
        return _refused(request, refused)


@public  # Microsoft's redirect back; MSAL + the id token checks decide who this is
def sign_in_with_microsoft_callback(request: SignInHttpRequest) -> HttpResponse:
    if not sso.enabled():
        return render(
            request,
            "registration/sso_refused.html",
            {"message": "Sign-in with Microsoft is not switched on here."},
            status=404,
        )
    # Refused answers are counted per address, with the password failures: past the limit
    # the callback is not even looked at (nor audited).
    wait = credential_limits.wait_before_signing_in(request)
    if wait:
        return too_many_sign_ins(request, wait)
    try:
        signed = sso.complete(request)
    except sso.SignInRefused as refused:
        if refused.status < 500:  # the portal's own trouble (503) is nobody's attempt
            credential_limits.record_sign_in_failure(request, reason="Microsoft sign-in refused")
        return _refused(request, refused)
    sso.log_in(request, signed)
    target = (
        signed.next_url
        if url_has_allowed_host_and_scheme(
            signed.next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
        else ""
    )
    return redirect(target or settings.LOGIN_REDIRECT_URL)
