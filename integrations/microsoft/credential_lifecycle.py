"""Credential rotation: add (pending) → verify → activate → grace → retire, and rollback.

A credential is a client secret, a certificate (PEM or PFX; its private key stored encrypted
like a secret) or workload identity (a federated token file: nothing stored). All three go
through the same steps, so switching between kinds is a rotation like any other.

Every operator step checks `rotate_credentials` before its transaction (so a denial is
audited even though nothing happens) and writes its audit event in the same transaction as
its effect. Secret values are never logged, audited, put in exceptions or returned; the
fingerprint (a SHA-256 prefix) is how people tell secrets apart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from integrations.graph import auth
from integrations.graph.errors import TokenError
from integrations.microsoft import certificates
from integrations.microsoft.active_credential import (
    TARGET,
    client_credential,
    configured_app,
    federated_fingerprint,
    public_params,
)
from integrations.microsoft.certificates import CertificateError
from integrations.microsoft.models import Credential
from portal.access.actors import Actor
from portal.access.authz import require
from portal.approvals import gate
from portal.audit.services import record
from portal.lib.crypto import encrypt, fingerprint

logger = logging.getLogger("integrations.microsoft.credentials")

MAX_SECRET_LENGTH = 1024


class CredentialError(Exception):
    """A rotation step that cannot be done as asked (message is for the operator)."""


@dataclass
class VerifyOutcome:
    ok: bool
    detail: str
    roles: list[str] = field(default_factory=list)


def _refresh_tokens_after_commit() -> None:
    # The next token in this process must come from the newly active secret; other
    # processes notice within CREDENTIAL_RECHECK_SECONDS (auth.resolve_active).
    transaction.on_commit(auth.invalidate)


# --------------------------------------------------------------------------- lookups


def inventory() -> list[Credential]:
    """Every credential, newest first (for `view_secrets_metadata` pages; no values)."""
    return list(Credential.objects.defer("secret_encrypted"))


# --------------------------------------------------------------------------- steps


def _store_pending(actor: Actor, display_name: str, **fields: object) -> Credential:
    """Create a pending credential and audit it (the caller has checked permission)."""
    display_name = (display_name or "").strip()[:120] or f"Added {timezone.now():%Y-%m-%d}"
    existing = Credential.objects.filter(fingerprint=fields["fingerprint"]).first()
    if existing is not None:
        raise CredentialError(
            f"This {existing.get_kind_display().lower()} is already stored as #{existing.pk} "
            f"“{existing.display_name}” ({existing.state})."
        )
    expires_at = fields.get("expires_at")
    with transaction.atomic():
        credential = Credential.objects.create(
            display_name=display_name,
            created_by=actor.name[:150],
            **fields,
            **configured_app(),
        )
        record(
            "credential.add",
            actor=actor,
            target_type=TARGET,
            target_id=credential.pk,
            params={
                **public_params(credential),
                "expires_at": expires_at.isoformat() if isinstance(expires_at, datetime) else None,
            },
        )
    return credential


def add_secret(
    actor: Actor, value: str, display_name: str, expires_at: datetime | None = None
) -> Credential:
    """Store a new secret as pending."""
    require(actor, "rotate_credentials", action="credential.add", target_type=TARGET)
    value = (value or "").strip()
    if not value:
        raise CredentialError("The secret is empty.")
    if len(value) > MAX_SECRET_LENGTH:
        raise CredentialError("The secret is too long to be a client secret.")
    if expires_at is not None and expires_at <= timezone.now():
        raise CredentialError("The expiry date is in the past.")
    return _store_pending(
        actor,
        display_name,
        kind=Credential.Kind.SECRET,
        secret_encrypted=encrypt(value),
        fingerprint=fingerprint(value),
        expires_at=expires_at,
    )


def add_certificate(
    actor: Actor, data: bytes, password: str = "", display_name: str = ""
) -> Credential:
    """Store a certificate and its private key (PEM or PFX upload) as pending.

    The expiry is the certificate's own; the key is kept encrypted, never shown."""
    require(actor, "rotate_credentials", action="credential.add", target_type=TARGET)
    try:
        loaded = certificates.load(data, password, now=timezone.now())
    except CertificateError as exc:
        raise CredentialError(str(exc)) from None
    return _store_pending(
        actor,
        display_name or loaded.subject,
        kind=Credential.Kind.CERTIFICATE,
        secret_encrypted=encrypt(loaded.private_key_pem),
        certificate_pem=loaded.certificate_pem,
        thumbprint=loaded.thumbprint,
        subject=loaded.subject[:300],
        fingerprint=certificates.fingerprint(loaded.certificate_pem),
        expires_at=loaded.not_after,
    )


def add_workload_identity(actor: Actor, display_name: str = "") -> Credential:
    """Store workload identity (the MICROSOFT_CLIENT_ASSERTION_FILE token) as pending.

    Nothing secret is stored: the token is read from the file at every token request."""
    require(actor, "rotate_credentials", action="credential.add", target_type=TARGET)
    if not settings.MICROSOFT_CLIENT_ASSERTION_FILE:
        raise CredentialError(
            "Workload identity needs MICROSOFT_CLIENT_ASSERTION_FILE (or the "
            "AZURE_FEDERATED_TOKEN_FILE that AKS workload identity sets): it is not set."
        )
    try:
        auth.read_client_assertion()
    except TokenError as exc:
        raise CredentialError(exc.message) from None
    app = configured_app()
    return _store_pending(
        actor,
        display_name or "Workload identity",
        kind=Credential.Kind.FEDERATED,
        fingerprint=federated_fingerprint(app["tenant_id"], app["client_id"]),
    )


def _get(credential_id: int) -> Credential:
    try:
        return Credential.objects.get(pk=credential_id)
    except Credential.DoesNotExist:
        raise CredentialError(f"There is no credential #{credential_id}.") from None


def verify_secret(actor: Actor, credential_id: int) -> VerifyOutcome:
    """Ask for a token with this credential (any kind) using a fresh MSAL app; store the
    outcome."""
    require(
        actor,
        "rotate_credentials",
        action="credential.verify",
        target_type=TARGET,
        target_id=credential_id,
    )
    credential = _get(credential_id)
    if credential.state == Credential.State.RETIRED:
        raise CredentialError(f"Credential #{credential.pk} is retired; its value was erased.")
    # The token request happens outside any transaction: no lock held during network I/O.
    try:
        credential.refuse_if_foreign()
        result = auth.acquire_with(client_credential(credential))
    except TokenError as exc:
        outcome = VerifyOutcome(False, exc.message)
    else:
        roles = sorted(auth.token_claims(result["access_token"]).get("roles") or [])
        outcome = VerifyOutcome(
            True, f"A token was issued with this {credential.get_kind_display().lower()}.", roles
        )
    now = timezone.now()
    with transaction.atomic():
        if outcome.ok:
            Credential.objects.filter(pk=credential.pk).update(
                last_verified_at=now, last_error="", last_error_at=None
            )
        else:
            Credential.objects.filter(pk=credential.pk).update(
                last_error=outcome.detail[:2000], last_error_at=now
            )
        record(
            "credential.verify",
            actor=actor,
            target_type=TARGET,
            target_id=credential.pk,
            params={**public_params(credential), "roles": outcome.roles},
            outcome="success" if outcome.ok else "failure",
            reason="" if outcome.ok else outcome.detail[:500],
        )
    return outcome


def activate(actor: Actor, credential_id: int) -> Credential:
    """Make a verified pending credential the one used for tokens, atomically.

    The previous active one goes to grace until now + CREDENTIAL_GRACE_HOURS (the rollback
    target); a credential already in grace is retired, since there is one rollback target.
    """
    require(
        actor,
        "rotate_credentials",
        action="credential.activate",
        target_type=TARGET,
        target_id=credential_id,
    )
    gate.check(actor, "credential.activate", {"credential_id": credential_id})
    now = timezone.now()
    with transaction.atomic():
        # Lock every live row so two activations cannot interleave (PostgreSQL; SQLite
        # already serialises writers with BEGIN IMMEDIATE).
        rows = {
            c.pk: c
            for c in Credential.objects.select_for_update().exclude(state=Credential.State.RETIRED)
        }
        credential = rows.get(credential_id)
        if credential is None:
            raise CredentialError(f"There is no live credential #{credential_id}.")
        if credential.state != Credential.State.PENDING:
            raise CredentialError(
                f"Only a pending credential can be activated; #{credential.pk} is "
                f"{credential.state}."
            )
        if not credential.is_verified:
            raise CredentialError(
                f"Verify credential #{credential.pk} first (a token must be issued with it)"
                + (f"; last error: {credential.last_error}" if credential.last_error else ".")
            )
        if credential.is_expired:
            raise CredentialError(f"Credential #{credential.pk} has expired.")
        previous = next((c for c in rows.values() if c.state == Credential.State.ACTIVE), None)
        for old in rows.values():
            if old.state == Credential.State.GRACE:
                _retire_row(old, now, actor, "replaced as rollback target by a newer activation")
        grace_until = None
        if previous is not None:
            grace_until = now + timedelta(hours=int(settings.CREDENTIAL_GRACE_HOURS))
            previous.state = Credential.State.GRACE
            previous.grace_until = grace_until
            previous.save(update_fields=["state", "grace_until"])
        credential.state = Credential.State.ACTIVE
        credential.activated_at = now
        credential.save(update_fields=["state", "activated_at"])
        record(
            "credential.activate",
            actor=actor,
            target_type=TARGET,
            target_id=credential.pk,
            params={
                **public_params(credential),
                "previous": previous.pk if previous else None,
                "grace_until": grace_until.isoformat() if grace_until else None,
            },
        )
        _refresh_tokens_after_commit()
    return credential


def rollback(actor: Actor) -> Credential:
    """Make the credential in grace active again.

    The current active one goes back to *pending* with its verification cleared, not to
    retired: a rollback usually means "the new secret misbehaved somewhere" (not yet
    propagated in Entra ID, deleted by mistake, another deployment still on the old one), and
    keeping it lets the operator re-verify and re-activate it later — or retire it explicitly.
    """
    require(actor, "rotate_credentials", action="credential.rollback", target_type=TARGET)
    gate.check(actor, "credential.rollback", {})
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            Credential.objects.select_for_update().filter(
                state__in=[Credential.State.ACTIVE, Credential.State.GRACE]
            )
        )
        grace = next((c for c in rows if c.state == Credential.State.GRACE), None)
        current = next((c for c in rows if c.state == Credential.State.ACTIVE), None)
        if grace is None:
            raise CredentialError("There is no credential in its grace period to roll back to.")
        if grace.is_expired:
            raise CredentialError(f"Credential #{grace.pk} (in grace) has expired.")
        if grace.grace_until is not None and grace.grace_until <= now:
            # The retire schedule may not have run yet; the window is over all the same.
            raise CredentialError(
                f"Credential #{grace.pk}'s grace period ended at "
                f"{grace.grace_until:%Y-%m-%d %H:%M} UTC: it can no longer "
                "be rolled back to."
            )
        if current is not None:
            current.state = Credential.State.PENDING
            current.last_verified_at = None
            current.activated_at = None
            current.save(update_fields=["state", "last_verified_at", "activated_at"])
        grace.state = Credential.State.ACTIVE
        grace.grace_until = None
        grace.activated_at = now
        grace.save(update_fields=["state", "grace_until", "activated_at"])
        record(
            "credential.rollback",
            actor=actor,
            target_type=TARGET,
            target_id=grace.pk,
            params={
                **public_params(grace),
                "demoted": current.pk if current else None,
                "demoted_to": "pending",
            },
        )
        _refresh_tokens_after_commit()
    return grace


def _retire_row(credential: Credential, now: datetime, actor: Actor, reason: str = "") -> None:
    """Retire one row and audit it (in the caller's transaction)."""
    credential.state = Credential.State.RETIRED
    credential.retired_at = now
    credential.grace_until = None
    # Nothing will use it again: erase the ciphertext rather than keep a copy around.
    credential.secret_encrypted = ""
    credential.save(update_fields=["state", "retired_at", "grace_until", "secret_encrypted"])
    record(
        "credential.retire",
        actor=actor,
        target_type=TARGET,
        target_id=credential.pk,
        params=public_params(credential),
        reason=reason,
    )


def retire(actor: Actor, credential_id: int) -> Credential:
    """Retire a pending or grace credential (the active one cannot be retired)."""
    require(
        actor,
        "rotate_credentials",
        action="credential.retire",
        target_type=TARGET,
        target_id=credential_id,
    )
    gate.check(actor, "credential.retire", {"credential_id": credential_id})
    with transaction.atomic():
        credential = Credential.objects.select_for_update().filter(pk=credential_id).first()
        if credential is None:
            raise CredentialError(f"There is no credential #{credential_id}.")
        if credential.state == Credential.State.ACTIVE:
            raise CredentialError(
                "The active credential cannot be retired: activate another "
                "one first (or roll back)."
            )
        if credential.state == Credential.State.RETIRED:
            raise CredentialError(f"Credential #{credential.pk} is already retired.")
        _retire_row(credential, timezone.now(), actor)
    return credential


def retire_expired_grace() -> int:
    """Retire credentials whose grace period is over (a schedule calls this). Returns count."""
    actor = Actor.system("schedule:retire_expired_grace")
    now = timezone.now()
    count = 0
    with transaction.atomic():
        for credential in Credential.objects.select_for_update().filter(
            state=Credential.State.GRACE, grace_until__lte=now
        ):
            _retire_row(credential, now, actor, "grace period over")
            count += 1
    return count
