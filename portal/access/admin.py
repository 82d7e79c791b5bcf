from __future__ import annotations

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin, messages
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import pluralize
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.access import api_tokens, lockouts
from portal.access.actors import Actor
from portal.access.models import BearerToken, CredentialFailure
from portal.lib.admin_utils import ReadOnlyAdminMixin

# Accounts and roles change through portal.access (`portal_user`, the SSO role mapping), which
# checks manage_users and audits; the stock user and group pages would do neither.
for model in (User, Group):
    if admin.site.is_registered(model):
        admin.site.unregister(model)

# django-otp's own admin shows each device's secret key and QR code: nobody, admins
# included, should read another person's second factor. Devices are enrolled by their owner
# and reset with `portal_user reset-mfa`.
if admin.site.is_registered(TOTPDevice):
    admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("user", "name", "confirmed", "created_at", "last_used_at")
    list_filter = ("confirmed",)
    fields = ("user", "name", "confirmed", "created_at", "last_used_at", "throttling_failure_count")
    readonly_fields = fields


@admin.register(CredentialFailure)
class CredentialFailureAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Refused API credentials and failed sign-ins, one counted row per source and window."""

    list_display = (
        "window_start",
        "scope",
        "key",
        "count",
        "refused",
        "last_seen_at",
        "last_address",
        "last_path",
    )
    list_filter = ("scope",)
    search_fields = ("key", "last_address")
    date_hierarchy = "window_start"


# django-axes' pages, read-only: the sign-in logs are evidence (never deleted here), and a
# lockout is cleared only through portal.access.lockouts (manage_users, audited).
for model in (AccessAttempt, AccessLog, AccessFailureLog):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


@admin.register(AccessAttempt)
class LockoutAdmin(ReadOnlyAdminMixin, AccessAttemptAdmin):
    actions = ["clear_selected"]

    @admin.action(description="Clear the selected lockouts (role: admin)")
    def clear_selected(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        try:
            cleared = lockouts.clear_lockouts(
                Actor.from_request(request), queryset.values_list("pk", flat=True)
            )
        except PermissionDenied as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(
            request, f"{cleared} lockout{pluralize(cleared)} cleared.", messages.SUCCESS
        )


@admin.register(AccessLog)
class SignInLogAdmin(ReadOnlyAdminMixin, AccessLogAdmin):
    actions = None


@admin.register(AccessFailureLog)
class SignInFailureLogAdmin(ReadOnlyAdminMixin, AccessFailureLogAdmin):
    actions = None


@admin.register(BearerToken)
class ApiTokenAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """People's API tokens. They are created on the console or with `manage.py api_token
    create`; the hash is never shown. Service clients' tokens are managed per client."""

    list_display = (
        "id",
        "prefix",
        "user",
        "name",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "name", "user__username")
    exclude = ("token_hash",)
    actions = ["revoke_selected"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[BearerToken]:
        return super().get_queryset(request).filter(client__isnull=True)

    @admin.action(description="Revoke the selected tokens")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[BearerToken]) -> None:
        actor = Actor.from_request(request)
        try:
            for token in queryset.only("id"):
                api_tokens.revoke_token(actor, token.pk)
        except PermissionDenied as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, "Revoked.", messages.SUCCESS)
