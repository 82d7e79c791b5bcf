from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from portal.access.roles import PERMISSIONS


class AccessPolicy(models.Model):
    """Holds the portal's custom permissions; it has no table of its own."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = list(PERMISSIONS.items())


class EntraAccount(models.Model):
    """Links a portal account to a person in Microsoft Entra ID, by tenant + object id (oid).

    Never by e-mail or UPN: those can be renamed and reassigned; the oid cannot. An account
    with this link is SSO-managed: its role comes from Entra at every sign-in and re-check.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="entra_account"
    )
    tenant_id = models.CharField(max_length=36)
    object_id = models.CharField(max_length=36)
    upn = models.CharField("user principal name", max_length=255, blank=True)
    # What Entra last granted (app role values, and group ids that matched the map).
    grants = models.JSONField(default=list, blank=True)
    # The latest refresh token (encrypted, FIELD_ENCRYPTION_KEYS): lets the periodic re-check
    # ask Entra about people who hold API tokens but no live session.
    refresh_token = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "object_id"], name="entra_account_unique_oid"
            )
        ]

    def __str__(self) -> str:
        return f"{self.upn or self.object_id} (Entra)"


class LastSignIn(models.Model):
    """When and how a person last signed in (the users page shows it)."""

    class Method(models.TextChoices):
        PASSWORD = "password", "Password"
        BREAK_GLASS = "break-glass", "Password (break-glass account)"
        ENTRA = "entra", "Microsoft Entra ID"
        ENTRA_MFA = "entra-mfa", "Microsoft Entra ID with MFA"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="last_sign_in"
    )
    at = models.DateTimeField()
    method = models.CharField(max_length=20, choices=Method.choices)

    def __str__(self) -> str:
        return f"{self.user} {self.method} at {self.at:%Y-%m-%d %H:%M}"


class CredentialFailure(models.Model):
    """Security counter: refused credentials from one source in one time window.

    One row per (scope, key, window), counted up, instead of one audit row per attempt: an
    unauthenticated caller must not be able to grow the append-only audit log.
    `key` is the client's address (IPv6 by /64) or a token's public prefix, never a secret.
    ADDRESS and TOKEN_PREFIX count refused API credentials; SIGN_IN counts failed sign-ins
    (passwords, "Sign in with Microsoft" callbacks) per address.
    """

    class Scope(models.TextChoices):
        ADDRESS = "address", "API client address"
        TOKEN_PREFIX = "token_prefix", "API token prefix"
        SIGN_IN = "sign_in", "Sign-in address"

    scope = models.CharField(max_length=16, choices=Scope.choices)
    key = models.CharField(max_length=64)
    window_start = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(
        default=0, help_text="Attempts answered 429 because the limit was reached"
    )
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    last_reason = models.CharField(max_length=100, blank=True)
    last_path = models.CharField(max_length=255, blank=True)
    last_address = models.CharField(max_length=45, blank=True)

    class Meta:
        ordering = ["-window_start", "scope", "key"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "key", "window_start"], name="access_credential_failure_unique"
            )
        ]
        indexes = [models.Index(fields=["window_start"], name="access_cred_failure_window")]

    def __str__(self) -> str:
        return f"{self.window_start:%Y-%m-%d %H:%M} {self.scope} {self.key}: {self.count}"


class ServiceClient(models.Model):
    """A non-human API principal (a Fleet service such as "fleet-api"): tokens and scopes,
    no password, no console, no second factor. Audit rows name it (actor type "client")."""

    id = models.BigAutoField(primary_key=True)
    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=300, blank=True)
    # Scope names (service_clients.SCOPES), e.g. ["messages:send", "events:read"].
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def actor_name(self) -> str:
        """How the client is named where people's usernames also appear (created_by fields):
        Django usernames cannot contain ':', so this never collides with a person."""
        return f"client:{self.name}"


class BearerTokenQuerySet(models.QuerySet["BearerToken"]):
    def of_people(self) -> BearerTokenQuerySet:
        """People's API tokens (the console's API tokens page, `api_token list`, the admin)."""
        return self.filter(client__isnull=True)


class BearerToken(models.Model):
    """One bearer token of the JSON API: a person's API token (`user` set; `fgp_…`) or a
    service client's (`client` set; `fgs_…`). Only its SHA-256 is stored. During a client's
    rotation the old token stays valid until its (shortened) expiry, so two work at once."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="api_tokens",
    )
    client = models.ForeignKey(
        ServiceClient, on_delete=models.CASCADE, null=True, blank=True, related_name="tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True)
    token_hash = models.CharField(max_length=64, unique=True)
    # A person's token: permission codenames, empty meaning "whatever the user's role allows".
    # A client's token is always empty: the client's own scopes apply.
    scopes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = BearerTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name = "API token"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, client__isnull=True)
                | models.Q(user__isnull=True, client__isnull=False),
                name="access_bearertoken_one_owner",
            )
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or self.owner_name})"

    @property
    def owner_name(self) -> str:
        if self.client is not None:
            return self.client.name
        return self.user.get_username() if self.user is not None else ""

    @property
    def display_name(self) -> str:
        """How audit rows name a person's token (clients are named by the client)."""
        return f"token:{self.prefix}:{self.owner_name}"

    @property
    def is_usable(self) -> bool:
        if self.revoked_at is not None:
            return False
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return False
        if self.client is not None:
            return self.client.revoked_at is None
        return self.user is not None and self.user.is_active

    def allows(self, codename: str) -> bool:
        """A person's token narrows its user's role to its scopes (none: the whole role)."""
        return not self.scopes or codename in self.scopes
