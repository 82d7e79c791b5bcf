"""Approval requests in the Django admin: read-only; deciding goes through the services, so
the requester cannot approve their own request here either."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest

from portal.access.actors import Actor
from portal.approvals import services
from portal.approvals.models import ApprovalPolicy, ApprovalRequest
from portal.lib.admin_utils import ReadOnlyAdminMixin


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "action",
        "summary",
        "status",
        "requester_name",
        "decided_by_name",
        "created_at",
        "break_glass",
    )
    list_filter = ("status", "action", "break_glass")
    search_fields = ("=id", "requester_name", "decided_by_name")
    actions = ["approve_selected", "reject_selected"]

    def _decide(self, request: HttpRequest, queryset: QuerySet, decide: str) -> None:
        actor = Actor.from_request(request)
        for approval in queryset.only("id"):
            try:
                if decide == "approve":
                    done = services.approve(actor, approval.pk, "approved in the Django admin")
                else:
                    done = services.reject(actor, approval.pk, "rejected in the Django admin")
            except (services.ApprovalError, PermissionDenied) as exc:
                self.message_user(request, f"#{approval.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request, f"#{done.pk}: {done.shown_status.lower()}.", messages.SUCCESS
                )

    @admin.action(description="Approve the selected requests (not your own)")
    def approve_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._decide(request, queryset, "approve")

    @admin.action(description="Reject the selected requests")
    def reject_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._decide(request, queryset, "reject")


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Changed on the console's Approval policy page (audited), never here."""

    list_display = ("actions", "bulk_threshold", "updated_by", "updated_at")
