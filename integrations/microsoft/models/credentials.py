"""How the portal proves it is the app registration (client secrets, certificates, workload
identity) and the delegated account that sends Teams messages."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone

from integrations.graph.auth import credential_mismatch, refuse_foreign_credential
from portal.lib.crypto import decrypt


class CredentialQuerySet(models.QuerySet["Credential"]):
    def active(self) -> CredentialQuerySet:
        """The secret used for tokens (at most one: a constraint)."""
        return self.filter(state=Credential.State.ACTIVE)

    def active_expires_in(self) -> timedelta | None:
        """Time left until the active secret expires (negative: expired); None when there is
        no active secret or its expiry is not recorded."""
        expires = self.active().values_list("expires_at", flat=True).first()
        return expires - timezone.now() if expires else None


class Credential(models.Model):
    """How the portal proves it is the app registration: a client secret, a certificate (its
    private key encrypted like a secret, the certificate itself in clear) or workload identity
    (a federated token read from MICROSOFT_CLIENT_ASSERTION_FILE: nothing stored).

    Life cycle: pending (added) → verified (a fresh MSAL app got a token with it) → active
    (used for every token) → grace (previous active, kept for rollback until grace_until) →
    retired (ciphertext erased).
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        ACTIVE = "active", "Active"
        GRACE = "grace", "Grace period"
        RETIRED = "retired", "Retired"

    class Kind(models.TextChoices):
        SECRET = "secret", "Client secret"
        CERTIFICATE = "certificate", "Certificate"
        FEDERATED = "federated", "Workload identity"

    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.SECRET)
    display_name = models.CharField(max_length=120)
    # The app registration this secret belongs to: a secret only works for its own tenant and
    # client, so a mismatch with the configured ones stops token requests before Entra sees
    # them ("" = recorded before this was tracked: not checked).
    tenant_id = models.CharField(max_length=100, blank=True, editable=False)
    client_id = models.CharField(max_length=100, blank=True, editable=False)
    # Fernet ciphertext (crypto.encrypt) of the secret or the certificate's private key;
    # "" once retired, and always for workload identity.
    secret_encrypted = models.TextField(blank=True, editable=False)
    # Certificates only: the public certificate (PEM) and what Entra ID shows of it.
    certificate_pem = models.TextField(blank=True, editable=False)
    thumbprint = models.CharField(max_length=64, blank=True, editable=False)
    subject = models.CharField(max_length=300, blank=True, editable=False)
    # First 12 hex digits of SHA-256(secret): tells secrets apart without revealing any part.
    fingerprint = models.CharField(max_length=16, db_index=True, editable=False)
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.PENDING, db_index=True
    )
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    grace_until = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    last_verified_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    objects = CredentialQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Exactly one secret is used for tokens at any time.
            models.UniqueConstraint(
                fields=["state"],
                condition=Q(state="active"),
                name="microsoft_one_active_credential",
            ),
            # One rollback target at most.
            models.UniqueConstraint(
                fields=["state"], condition=Q(state="grace"), name="microsoft_one_grace_credential"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} (…{self.fingerprint}, {self.state})"

    def __repr__(self) -> str:
        return f"<Credential #{self.pk} {self.fingerprint} {self.state}>"

    @property
    def is_verified(self) -> bool:
        """Verified since the last failure (a failed verification clears it)."""
        return self.last_verified_at is not None and not self.last_error

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def expires_in(self) -> timedelta | None:
        """Time left until expiry (negative: expired); None when not recorded."""
        return self.expires_at - timezone.now() if self.expires_at else None

    def configuration_mismatch(self) -> str:
        """Why this secret cannot be used with the configured tenant and client ("" = it can)."""
        return credential_mismatch(self.tenant_id, self.client_id)

    def refuse_if_foreign(self) -> None:
        refuse_foreign_credential(self.tenant_id, self.client_id)

    def secret_value(self) -> str:
        """The plaintext secret, for MSAL only. Never log, render or audit it."""

        if not self.secret_encrypted:
            raise ValueError(f"Credential #{self.pk} is retired; its secret was erased.")
        return decrypt(self.secret_encrypted)


class DelegatedAccount(models.Model):
    """The service account that sends Teams messages (app-only tokens cannot: "Send chatMessage in
    a channel or a chat").

    Its MSAL token cache (refresh token included) is stored encrypted; the current sender is
    the most recently connected account that is not disconnected.
    """

    upn = models.CharField("user principal name", max_length=255)
    display_name = models.CharField(max_length=255, blank=True)
    home_account_id = models.CharField(max_length=255, blank=True, editable=False)
    scopes = models.CharField(max_length=500, blank=True)
    token_cache_encrypted = models.TextField(blank=True, editable=False)
    # Bumped on every cache write so each process knows when to reload its copy.
    cache_version = models.PositiveIntegerField(default=0, editable=False)
    connected_at = models.DateTimeField(default=timezone.now)
    connected_by = models.CharField(max_length=150, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    last_refresh_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-connected_at", "-id"]

    def __str__(self) -> str:
        return self.upn

    def __repr__(self) -> str:
        return f"<DelegatedAccount #{self.pk} {self.upn}>"
