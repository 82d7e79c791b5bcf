"""Credentials: the inventory of secrets, certificates and workload identity (never a secret
value or private key), the rotation wizard, the Teams sender account (delegated sign-in).

The services in integrations.microsoft.credential_lifecycle / auth check `rotate_credentials` and
audit every step; these views only translate between forms, messages and redirects.
"""

from __future__ import annotations

from datetime import datetime, time
from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from integrations.graph.errors import GraphError
from integrations.microsoft import certificates, credential_lifecycle, teams_sender
from integrations.microsoft.credential_lifecycle import CredentialError
from integrations.microsoft.models import Credential, DelegatedAccount
from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.alerts.models import TokenHealth
from portal.lib.middleware import content_security_policy

# The MSAL auth-code flow (PKCE verifier, state, nonce) waits in the session for the callback.
FLOW_SESSION_KEY = "console.teams_sender_flow"


class AddSecretForm(forms.Form):
    value = forms.CharField(
        label="Secret value",
        max_length=credential_lifecycle.MAX_SECRET_LENGTH,
        strip=True,
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    display_name = forms.CharField(
        label="Name (e.g. the description in Entra ID)", max_length=120, required=False
    )
    expires_on = forms.DateField(
        label="Expires on (from Entra ID)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def clean_expires_on(self) -> datetime | None:
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        expires = timezone.make_aware(datetime.combine(day, time.min))
        if expires <= timezone.now():
            raise forms.ValidationError("This date is in the past: the secret has expired.")
        return expires


class AddCertificateForm(forms.Form):
    certificate_file = forms.FileField(
        label="Certificate with its private key (PEM or PFX)",
        max_length=255,
        widget=forms.ClearableFileInput(attrs={"accept": ".pem,.pfx,.p12,.key,.crt"}),
    )
    certificate_password = forms.CharField(
        label="Password (PFX or encrypted key; blank if none)",
        required=False,
        strip=False,
        max_length=1024,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
    )
    certificate_name = forms.CharField(
        label="Certificate name (blank: its subject)", max_length=120, required=False
    )

    def clean_certificate_file(self) -> bytes:
        upload = self.cleaned_data["certificate_file"]
        if upload.size > certificates.MAX_UPLOAD_BYTES:
            raise forms.ValidationError("The file is too large to be a certificate and its key.")
        return bytes(upload.read())


class ConnectSenderForm(forms.Form):
    login_hint = forms.CharField(
        label="Service account (UPN, optional)", max_length=255, required=False
    )


def _rotation_step(rows: list[Credential]) -> dict[str, object]:
    """Where the rotation stands, for the wizard's stepper."""
    pending = [c for c in rows if c.state == Credential.State.PENDING]
    verified = [c for c in pending if c.is_verified]
    grace = next((c for c in rows if c.state == Credential.State.GRACE), None)
    if verified:
        return {"current": 3, "hint": f"#{verified[0].pk} is verified: activate it."}
    if pending:
        return {"current": 2, "hint": f"#{pending[0].pk} is stored but not verified yet."}
    if grace is not None:
        return {
            "current": 4,
            "hint": f"The previous secret #{grace.pk} is kept for rollback "
            f"until {grace.grace_until:%Y-%m-%d %H:%M} UTC.",
        }
    return {"current": 1, "hint": "No rotation in progress."}


@require_GET
@requires("view_secrets_metadata")
def credentials_page(request: HttpRequest) -> HttpResponse:
    rows = credential_lifecycle.inventory()
    now = timezone.now()
    health = TokenHealth.objects.in_bulk([row.pk for row in rows])
    for row in rows:
        row.days_left = (row.expires_at - now).days if row.expires_at else None  # type: ignore[attr-defined]
        row.token_health = health.get(row.pk)  # type: ignore[attr-defined]
    sender = teams_sender.current_delegated_account()
    context = {
        "rows": rows,
        "step": _rotation_step(rows),
        "has_grace": any(c.state == Credential.State.GRACE for c in rows),
        "grace_hours": int(settings.CREDENTIAL_GRACE_HOURS),
        "add_form": AddSecretForm(),
        "certificate_form": AddCertificateForm(),
        "assertion_file": settings.MICROSOFT_CLIENT_ASSERTION_FILE,
        "connect_form": ConnectSenderForm(),
        "sender": sender,
        "past_senders": DelegatedAccount.objects.filter(disconnected_at__isnull=False)[:5],
        "callback_url": teams_sender.delegated_redirect_uri(request),
        "can_rotate": request.user.has_perm("access.rotate_credentials"),
        "can_connect_tenant": request.user.has_perm("access.connect_tenant"),
    }
    response = render(request, "console/credentials.html", context)
    # "Connect Teams sender account" posts here and is redirected to the identity platform.
    authority = urlsplit(settings.MICROSOFT_AUTHORITY_HOST)
    response["Content-Security-Policy"] = content_security_policy(
        f"{authority.scheme}://{authority.netloc}"
    )
    return response


def _back() -> HttpResponse:
    return redirect("console:credentials")


@require_POST
@requires("rotate_credentials")
def credential_add(request: HttpRequest) -> HttpResponse:
    form = AddSecretForm(request.POST)
    if not form.is_valid():
        _form_errors(request, form)
        return _back()
    try:
        credential = credential_lifecycle.add_secret(
            Actor.from_request(request),
            form.cleaned_data["value"],
            form.cleaned_data["display_name"],
            form.cleaned_data["expires_on"],
        )
    except CredentialError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"Stored as #{credential.pk} (fingerprint …"
            f"{credential.fingerprint}), pending. Nothing uses it yet: "
            "verify it next.",
        )
    return _back()


def _form_errors(request: HttpRequest, form: forms.Form) -> None:
    for field, errors in form.errors.items():
        label = form.fields[field].label if field in form.fields else ""
        messages.error(request, f"{label or 'Credential'}: {' '.join(map(str, errors))}")


@require_POST
@requires("rotate_credentials")
def credential_add_certificate(request: HttpRequest) -> HttpResponse:
    form = AddCertificateForm(request.POST, request.FILES)
    if not form.is_valid():
        _form_errors(request, form)
        return _back()
    try:
        credential = credential_lifecycle.add_certificate(
            Actor.from_request(request),
            form.cleaned_data["certificate_file"],
            form.cleaned_data["certificate_password"],
            form.cleaned_data["certificate_name"],
        )
    except CredentialError as exc:
        messages.error(request, f"The certificate was not stored: {exc}")
    else:
        messages.success(
            request,
            f"Stored certificate #{credential.pk} ({credential.subject}, thumbprint "
            f"{credential.thumbprint}), pending. Upload the same certificate to the app "
            "registration in Entra ID if you have not, then verify it.",
        )
    return _back()


@require_POST
@requires("rotate_credentials")
def credential_add_workload_identity(request: HttpRequest) -> HttpResponse:
    try:
        credential = credential_lifecycle.add_workload_identity(Actor.from_request(request))
    except CredentialError as exc:
        messages.error(request, f"Workload identity was not added: {exc}")
    else:
        messages.success(
            request,
            f"Workload identity stored as #{credential.pk}, pending (nothing secret is "
            "stored: the token file is read at every token request). Verify it next.",
        )
    return _back()


@require_POST
@requires("rotate_credentials")
def credential_verify(request: HttpRequest, credential_id: int) -> HttpResponse:
    try:
        outcome = credential_lifecycle.verify_secret(Actor.from_request(request), credential_id)
    except CredentialError as exc:
        messages.error(request, str(exc))
        return _back()
    if outcome.ok:
        roles = ", ".join(outcome.roles) or "no application roles"
        messages.success(
            request,
            f"Credential #{credential_id} works: {outcome.detail} Roles in the token: {roles}.",
        )
    else:
        messages.error(
            request, f"Credential #{credential_id} did not get a token: {outcome.detail}"
        )
    return _back()


@require_POST
@requires("rotate_credentials")
def credential_activate(request: HttpRequest, credential_id: int) -> HttpResponse:
    try:
        credential = credential_lifecycle.activate(Actor.from_request(request), credential_id)
    except CredentialError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"#{credential.pk} ({credential.get_kind_display().lower()}) is now the active "
            "credential. The previous one stays valid for rollback during its grace period.",
        )
    return _back()


# Retiring erases a secret for good: the person types this word to confirm.
RETIRE_WORD = "retire"
# A secret that expires within this many days is a poor rollback target: say so.
EXPIRY_WARNING_DAYS = 14


def _rollback_warnings(grace: Credential) -> list[str]:
    """Why rolling back to `grace` may not work, in words (empty: nothing known against it)."""
    warnings = []
    left = grace.expires_in
    if left is not None and left.total_seconds() > 0 and left.days < EXPIRY_WARNING_DAYS:
        warnings.append(
            f"It expires on {grace.expires_at:%Y-%m-%d} ({left.days} day"
            f"{'s' if left.days != 1 else ''} left): roll back only to buy time, and rotate again."
        )
    if grace.last_error and (
        grace.last_verified_at is None
        or (grace.last_error_at is not None and grace.last_error_at > grace.last_verified_at)
    ):
        warnings.append(
            "Its last token request failed"
            f"{f' ({grace.last_error_at:%Y-%m-%d %H:%M} UTC)' if grace.last_error_at else ''}: "
            f"{grace.last_error[:200]} Rolling back to a failing secret stops every Graph call."
        )
    if grace.configuration_mismatch():
        warnings.append(f"It cannot be used: {grace.configuration_mismatch()}.")
    return warnings


def _confirm_page(request: HttpRequest, context: dict, status: int = 200) -> HttpResponse:
    # htmx loads the card into the credentials page; a plain link opens it as a page.
    template = "console/credential_confirm.html"
    if getattr(request, "htmx", False):
        template += "#card"
    return render(request, template, context, status=status)


@require_http_methods(["GET", "POST"])
@requires("rotate_credentials")
def credential_rollback(request: HttpRequest) -> HttpResponse:
    rows = credential_lifecycle.inventory()
    grace = next((c for c in rows if c.state == Credential.State.GRACE), None)
    current = next((c for c in rows if c.state == Credential.State.ACTIVE), None)
    if request.method == "GET" or request.POST.get("confirm") != "yes":
        if grace is None:
            messages.error(request, "There is no credential in its grace period to roll back to.")
            return _back()
        blocked = ""
        if grace.is_expired:
            blocked = f"#{grace.pk} expired on {grace.expires_at:%Y-%m-%d}: Entra ID refuses it."
        elif grace.grace_until is not None and grace.grace_until <= timezone.now():
            blocked = f"#{grace.pk}'s grace period ended at {grace.grace_until:%Y-%m-%d %H:%M} UTC."
        return _confirm_page(
            request,
            {
                "action": "rollback",
                "credential": grace,
                "current": current,
                "warnings": _rollback_warnings(grace),
                "blocked": blocked,
            },
            status=200 if request.method == "GET" else 400,
        )
    try:
        credential = credential_lifecycle.rollback(Actor.from_request(request))
    except CredentialError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"Rolled back: #{credential.pk} is active again; the newer "
            "secret went back to pending.",
        )
    return _back()


@require_http_methods(["GET", "POST"])
@requires("rotate_credentials")
def credential_retire(request: HttpRequest, credential_id: int) -> HttpResponse:
    typed = request.POST.get("confirm", "").strip().lower()
    if request.method == "GET" or typed != RETIRE_WORD:
        credential = Credential.objects.filter(pk=credential_id).first()
        if credential is None:
            messages.error(request, f"There is no credential #{credential_id}.")
            return _back()
        return _confirm_page(
            request,
            {
                "action": "retire",
                "credential": credential,
                "word": RETIRE_WORD,
                "error": f'Type "{RETIRE_WORD}" to confirm.' if request.method == "POST" else "",
            },
            status=200 if request.method == "GET" else 400,
        )
    try:
        credential = credential_lifecycle.retire(Actor.from_request(request), credential_id)
    except CredentialError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"#{credential.pk} is retired and its stored value erased. Delete it in Entra ID too.",
        )
    return _back()


@require_POST
@requires("rotate_credentials")
def teams_sender_connect(request: HttpRequest) -> HttpResponse:
    form = ConnectSenderForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The service account name is too long.")
        return _back()
    redirect_uri = teams_sender.delegated_redirect_uri(request)
    hint = form.cleaned_data["login_hint"].strip() or None
    try:
        # With a named account, sign that one in; without, let the admin pick one.
        auth_url, flow = teams_sender.start_delegated_connect(
            redirect_uri, login_hint=hint, prompt=None if hint else "select_account"
        )
    except GraphError as exc:
        messages.error(request, f"Could not start the sign-in: {exc.message}")
        return _back()
    request.session[FLOW_SESSION_KEY] = flow
    return redirect(auth_url)


@require_GET
@requires("rotate_credentials")
def teams_sender_callback(request: HttpRequest) -> HttpResponse:
    flow = request.session.pop(FLOW_SESSION_KEY, None)
    if not flow:
        messages.error(
            request,
            "No Teams sender sign-in was in progress in this browser "
            "session (or it was already completed). Start it again.",
        )
        return _back()
    if request.GET.get("error"):
        description = request.GET.get("error_description", "")[:300]
        messages.error(
            request,
            f"The sign-in was not completed: {request.GET['error']}"
            f"{' — ' + description if description else ''}",
        )
        return _back()
    try:
        account = teams_sender.complete_delegated_connect(
            Actor.from_request(request), flow, request.GET.dict()
        )
    except GraphError as exc:
        messages.error(request, f"The Teams sender was not connected: {exc.message}")
    else:
        messages.success(request, f"Teams messages are now sent as {account.upn}.")
    return _back()


@require_POST
@requires("rotate_credentials")
def teams_sender_disconnect(request: HttpRequest) -> HttpResponse:
    count = teams_sender.disconnect_delegated(Actor.from_request(request))
    if count:
        messages.success(
            request,
            "The Teams sender is disconnected and its tokens erased. "
            "Teams messages fail until someone connects an account.",
        )
    else:
        messages.info(request, "No Teams sender was connected.")
    return _back()
