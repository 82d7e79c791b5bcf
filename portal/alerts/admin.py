from django.contrib import admin

from portal.alerts.models import Alert, AlertEvent, AuditChainCheck
from portal.lib.admin_utils import ReadOnlyAdminMixin


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "rule",
        "state",
        "value",
        "threshold",
        "firing_since",
        "acknowledged_by",
        "snoozed_until",
        "last_evaluated_at",
    )
    list_filter = ("state",)


@admin.register(AlertEvent)
class AlertEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "rule", "state", "value", "created_at", "notified")
    list_filter = ("state", "rule")


@admin.register(AuditChainCheck)
class AuditChainCheckAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "checked_at", "ok", "events", "first_bad_event")
