from __future__ import annotations

from typing import Any

from django.contrib import admin

from portal.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers included: the log is append-only."""

    list_display = (
        "id",
        "created_at",
        "actor_name",
        "actor_role",
        "action",
        "target_type",
        "target_id",
        "outcome",
    )
    list_filter = ("outcome", "actor_type", "action")
    search_fields = ("actor_name", "action", "target_id", "request_id")
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False
