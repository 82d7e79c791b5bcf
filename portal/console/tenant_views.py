"""Connect a tenant (admin only): the console side of `manage.py connect_tenant`.

Step 1 (preview) acquires a token with the new values and shows what will change; step 2
(apply) repeats the preparation with the same values and carries it out. Between the two the
secret (or the certificate's private key) waits in the session, encrypted with
FIELD_ENCRYPTION_KEYS, for at most PENDING_SECONDS; it is never rendered back.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime
from datetime import time as day_start
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from integrations.microsoft import certificates, tenant
from integrations.microsoft.certificates import CertificateError
from integrations.microsoft.credential_lifecycle import MAX_SECRET_LENGTH
from integrations.microsoft.tenant import ConnectError
from integrations.microsoft.verify import run_checks
from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.lib.crypto import decrypt, encrypt

SESSION_KEY = "console.connect_tenant"
PENDING_SECONDS = 600


class ConnectTenantForm(forms.Form):
    tenant_id = forms.CharField(label="Directory (tenant) ID", max_length=100)
    client_id = forms.CharField(label="Application (client) ID", max_length=100)
    client_secret = forms.CharField(
        label="Client secret (its value, not its ID)",
        required=False,
        max_length=MAX_SECRET_LENGTH,
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    certificate_file = forms.FileField(
        label="…or a certificate with its private key (PEM or PFX)", required=False
    )
    certificate_password = forms.CharField(
        label="Certificate password (PFX or encrypted key; blank if none)",
        required=False,
        strip=False,
        max_length=1024,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
    )
    secret_expires_on = forms.DateField(
        label="Secret expires on (from Entra ID)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    authority_host = forms.CharField(
        label="Identity platform",
        required=False,
        initial=tenant.DEFAULT_AUTHORITY_HOST,
        max_length=300,
    )
    graph_url = forms.CharField(
        label="Graph URL", required=False, initial=tenant.DEFAULT_GRAPH_URL, max_length=300
    )
    ca_bundle = forms.CharField(
        label="CA bundle path (blank: the system's)", required=False, max_length=500
    )
    public_base_url = forms.CharField(
        label="Public base URL for webhooks (https)", required=False, max_length=300
    )
    keep_monitored_users = forms.BooleanField(
        label="Keep monitored users (re-resolve them by UPN in the new tenant)", required=False
    )
    drop_synced_items = forms.BooleanField(
        label="Drop the synced items of the old tenant", required=False
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload = data.get("certificate_file")
        if bool(data.get("client_secret")) == bool(upload):
            raise forms.ValidationError("Give either the client secret or a certificate file.")
        if upload:
            if upload.size > certificates.MAX_UPLOAD_BYTES:
                self.add_error("certificate_file", "The file is too large to be a certificate.")
                return data
            try:
                data["certificate"] = certificates.load(
                    upload.read(), data.get("certificate_password") or ""
                )
            except CertificateError as exc:
                self.add_error("certificate_file", str(exc))
        return data

    def expires_at(self) -> datetime | None:
        day = self.cleaned_data.get("secret_expires_on")
        return timezone.make_aware(datetime.combine(day, day_start.min)) if day else None


def _credential(pending: dict[str, Any]) -> tenant.NewCredential:
    if "certificate" in pending:
        pem = decrypt(pending["private_key"]) + pending["certificate"]
        return certificates.load(pem.encode("ascii"))
    return decrypt(pending["secret"])


def _prepare(request: HttpRequest, pending: dict[str, Any]) -> tenant.ConnectPlan:
    target = tenant.clean_target(**pending["target"])
    expires = pending.get("expires_at")
    return tenant.prepare(
        Actor.from_request(request),
        target,
        _credential(pending),
        keep_monitored_users=pending["keep"],
        drop_synced_items=pending["drop"],
        secret_expires_at=datetime.fromisoformat(expires) if expires else None,
    )


def _pending_credential(data: dict[str, Any]) -> dict[str, str]:
    """What waits in the session between preview and apply (the key/secret encrypted)."""
    certificate = data.get("certificate")
    if certificate is not None:
        return {
            "private_key": encrypt(certificate.private_key_pem),
            "certificate": certificate.certificate_pem,
        }
    return {"secret": encrypt(data["client_secret"])}


@require_http_methods(["GET", "POST"])
@requires("connect_tenant")
def connect_tenant(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST: token with the new values, then the preview."""
    context: dict[str, Any] = {"form": ConnectTenantForm(), "plan": None}
    if request.method == "POST":
        form = ConnectTenantForm(request.POST, request.FILES)
        context["form"] = form
        if form.is_valid():
            data = form.cleaned_data
            expires = form.expires_at()
            pending = {
                "target": {
                    k: data[k]
                    for k in (
                        "tenant_id",
                        "client_id",
                        "authority_host",
                        "graph_url",
                        "ca_bundle",
                        "public_base_url",
                    )
                },
                **_pending_credential(data),
                "keep": data["keep_monitored_users"],
                "drop": data["drop_synced_items"],
                "expires_at": expires.isoformat() if expires else None,
                "at": time.time(),
            }
            try:
                context["plan"] = _prepare(request, pending)
            except ConnectError as exc:
                form.add_error(None, str(exc))
            else:
                request.session[SESSION_KEY] = pending
    return render(
        request,
        "console/connect_tenant.html",
        context,
        status=400 if request.method == "POST" and context["plan"] is None else 200,
    )


# Connecting another tenant replaces the credentials and subscriptions: typed to confirm.
CONFIRM_WORD = "connect"


@require_POST
@requires("connect_tenant")
def connect_tenant_apply(request: HttpRequest) -> HttpResponse:
    pending = request.session.get(SESSION_KEY)
    if not pending or time.time() - pending.get("at", 0) > PENDING_SECONDS:
        request.session.pop(SESSION_KEY, None)
        messages.error(request, "The preview has expired: enter the values again.")
        return redirect("console:connect_tenant")
    if request.POST.get("confirm", "").strip().lower() != CONFIRM_WORD:
        # The preview again, with the reason: nothing changed.
        try:
            plan = _prepare(request, pending)
        except ConnectError as exc:
            messages.error(request, str(exc))
            return redirect("console:connect_tenant")
        context = {"plan": plan, "confirm_error": f'Type "{CONFIRM_WORD}" to confirm.'}
        return render(request, "console/connect_tenant.html", context, status=400)
    del request.session[SESSION_KEY]
    try:
        plan = _prepare(request, pending)
        result = tenant.apply(Actor.from_request(request), plan, _credential(pending))
    except (ConnectError, CertificateError) as exc:
        messages.error(request, str(exc))
        return redirect("console:connect_tenant")
    context = {"result": result, "target": asdict(result.plan.target), "checks": run_checks()}
    return render(request, "console/connect_tenant.html", context)
