"""The second sign-in step: enrol an authenticator app, or enter its code."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from portal.access import mfa
from portal.access.decorators import public


def _next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                       require_https=request.is_secure()):
        return target
    return "/"


@public  # needs a signed-in user (checked below); it is the step before any permission
def second_factor(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if user.is_verified():
        return redirect(_next(request))
    enrolled = mfa.confirmed_device(user) is not None
    error = ""
    if request.method == "POST":
        token = request.POST.get("token", "")
        check = mfa.verify if enrolled else mfa.confirm_enrollment
        error = check(request, token)
        if not error:
            return redirect(_next(request))
    context = {"enrolled": enrolled, "error": error, "next": _next(request),
               "issuer": settings.OTP_TOTP_ISSUER}
    if not enrolled:
        device = mfa.pending_device(user)
        context["qr"] = mfa.qr_code_data_uri(device)
        context["secret"] = device.config_url.split("secret=")[1].split("&")[0]
    return render(request, "registration/second_factor.html", context,
                  status=400 if error else 200)
