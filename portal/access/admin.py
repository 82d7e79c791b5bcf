from __future__ import annotations

from django.contrib import admin
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.access.models import CredentialFailure
from portal.admin_utils import ReadOnlyAdminMixin

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
    """Refused API credentials, one counted row per source and window."""

    list_display = ("window_start", "scope", "key", "count", "refused", "last_seen_at",
                    "last_address", "last_path")
    list_filter = ("scope",)
    search_fields = ("key", "last_address")
    date_hierarchy = "window_start"
