"""Read-only admin pages. Secrets and token caches are excluded, and nothing is added or
changed here: rotation and the Teams sender go through the services (audited, role-checked).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from integrations.graph.errors import GraphError
from integrations.microsoft import subscriptions, sync
from integrations.microsoft.models import (
    Credential,
    DelegatedAccount,
    GraphCall,
    LifecycleEvent,
    MonitoredUser,
    NotificationInbox,
    OutboundMessage,
    SendBudget,
    Subscription,
    SyncedItem,
    SyncRun,
    SyncState,
    WebhookRejection,
)
from integrations.microsoft.monitored_users import add_monitored_user, remove_monitored_user
from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record
from portal.lib.admin_utils import BigTableAdminMixin


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(GraphCall)
class GraphCallAdmin(BigTableAdminMixin, ReadOnlyAdmin):
    list_display = (
        "created_at",
        "method",
        "route",
        "status",
        "duration_ms",
        "throttled",
        "retry_after",
        "mailbox",
        "error_code",
        "request_id",
    )
    list_filter = ("status", "throttled", "method", "in_batch")
    search_fields = ("route", "mailbox", "request_id", "error_code")
    date_hierarchy = "created_at"


@admin.register(Credential)
class CredentialAdmin(ReadOnlyAdmin):
    list_display = (
        "display_name",
        "kind",
        "fingerprint",
        "thumbprint",
        "state",
        "created_at",
        "expires_at",
        "grace_until",
        "last_verified_at",
        "last_error",
    )
    list_filter = ("state", "kind")
    exclude = ("secret_encrypted",)


@admin.register(DelegatedAccount)
class DelegatedAccountAdmin(ReadOnlyAdmin):
    list_display = (
        "upn",
        "display_name",
        "connected_at",
        "connected_by",
        "disconnected_at",
        "last_refresh_at",
        "last_error",
    )
    exclude = ("token_cache_encrypted", "home_account_id")


# =====================================================================================
# Webhooks and delta sync. Worker-owned fields are read-only;
# the actions call the same service functions as the console and commands (role-checked,
# audited).
# =====================================================================================


def _run_each(request: HttpRequest, queryset: Any, func: Any, verb: str) -> None:
    actor = Actor.from_request(request)
    done = 0
    for obj in queryset:
        try:
            func(actor, obj)
            done += 1
        except (GraphError, ValueError, PermissionDenied) as exc:
            messages.error(request, f"{obj}: {exc}")
    if done:
        messages.success(request, f"{verb}: {done}")


@admin.register(MonitoredUser)
class MonitoredUserAdmin(admin.ModelAdmin):
    list_display = (
        "identifier",
        "upn",
        "display_name",
        "graph_id",
        "watch_messages",
        "watch_chat_messages",
        "is_active",
        "resolved_at",
        "last_error",
    )
    list_filter = ("is_active", "watch_messages", "watch_chat_messages")
    search_fields = ("identifier", "upn", "display_name", "graph_id")
    readonly_fields = (
        "graph_id",
        "upn",
        "display_name",
        "created_at",
        "created_by",
        "resolved_at",
        "last_error",
    )
    fields = ("identifier", "watch_messages", "watch_chat_messages", "is_active", *readonly_fields)

    actions = ("stop_monitoring",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Removal is "stop monitoring" (remove_monitored_user: role-checked, audited, keeps
        # the history); rows are never deleted here.
        return False

    @admin.action(description="Stop monitoring the selected users")
    def stop_monitoring(self, request: HttpRequest, queryset: Any) -> None:
        _run_each(request, queryset, lambda a, o: remove_monitored_user(a, o.pk), "Stopped")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # The identifier is what the Graph id was resolved from: fixed once added.
        return (*self.readonly_fields, "identifier") if obj else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        actor = Actor.from_request(request)
        if change:
            require(
                actor,
                "manage_monitored_users",
                action="monitored_user.change",
                target_type="monitored_user",
                target_id=obj.pk,
            )
            obj.save()
            record(
                "monitored_user.change",
                actor=actor,
                target_type="monitored_user",
                target_id=obj.pk,
                params={"kinds": obj.kinds, "is_active": obj.is_active},
            )
            return
        try:
            saved = add_monitored_user(
                actor,
                obj.identifier,
                messages=obj.watch_messages,
                chat_messages=obj.watch_chat_messages,
            )
        except ValueError as exc:
            messages.warning(request, str(exc))
            saved = MonitoredUser.objects.get(identifier=obj.identifier.strip())
        obj.pk = saved.pk
        obj.refresh_from_db()


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = (
        "monitored_user",
        "kind",
        "state",
        "graph_id",
        "expiration",
        "last_renewed_at",
        "last_notification_at",
        "last_error",
    )
    list_filter = ("state", "kind")
    search_fields = ("graph_id", "monitored_user__upn", "monitored_user__identifier")
    list_select_related = ("monitored_user",)
    exclude = ("client_state_encrypted",)
    actions = ("renew_selected", "recreate_selected", "delete_selected_in_graph")

    @admin.action(description="Renew in Graph")
    def renew_selected(self, request: HttpRequest, queryset: Any) -> None:
        _run_each(request, queryset, lambda a, o: subscriptions.renew(a, o.pk), "Renewed")

    @admin.action(description="Recreate (new subscription + delta catch-up)")
    def recreate_selected(self, request: HttpRequest, queryset: Any) -> None:
        _run_each(request, queryset, lambda a, o: subscriptions.recreate(a, o.pk), "Recreated")

    @admin.action(description="Delete in Graph and here")
    def delete_selected_in_graph(self, request: HttpRequest, queryset: Any) -> None:
        _run_each(request, queryset, lambda a, o: subscriptions.delete(a, o.pk), "Deleted")


@admin.register(LifecycleEvent)
class LifecycleEventAdmin(ReadOnlyAdmin):
    list_display = (
        "received_at",
        "event",
        "subscription_graph_id",
        "status",
        "handled_at",
        "outcome",
        "job",
        "followup_job",
    )
    list_filter = ("event", "status")
    search_fields = ("subscription_graph_id",)


@admin.register(NotificationInbox)
class NotificationInboxAdmin(ReadOnlyAdmin):
    list_display = (
        "received_at",
        "kind",
        "change_type",
        "monitored_user",
        "resource_id",
        "status",
        "processed_at",
        "sync_job",
    )
    list_filter = ("status", "kind", "change_type")
    search_fields = ("resource_id", "subscription_graph_id", "batch")
    list_select_related = ("monitored_user",)
    show_full_result_count = False  # a large table


@admin.register(WebhookRejection)
class WebhookRejectionAdmin(ReadOnlyAdmin):
    list_display = (
        "day",
        "endpoint",
        "reason",
        "count",
        "first_seen_at",
        "last_seen_at",
        "last_subscription_id",
        "last_remote_addr",
    )
    list_filter = ("reason", "endpoint")


@admin.register(SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = (
        "monitored_user",
        "kind",
        "status",
        "last_success_at",
        "last_attempt_at",
        "item_count",
        "round_kind",
        "token_obtained_at",
        "due_since",
        "last_error",
    )
    list_filter = ("status", "kind")
    list_select_related = ("monitored_user",)
    exclude = ("delta_link", "next_link")  # opaque, long, and useless to read
    actions = ("delta_now", "full_sync", "reset_token")

    @admin.action(description="Delta sync now")
    def delta_now(self, request: HttpRequest, queryset: Any) -> None:
        _run_each(
            request, queryset, lambda a, o: sync.delta_now(a, o.monitored_user_id, o.kind), "Queued"
        )

    @admin.action(description="Full sync (reset + run)")
    def full_sync(self, request: HttpRequest, queryset: Any) -> None:
        _run_each(
            request, queryset, lambda a, o: sync.full_sync(a, o.monitored_user_id, o.kind), "Queued"
        )

    @admin.action(description="Reset (drop the token; next run is full)")
    def reset_token(self, request: HttpRequest, queryset: Any) -> None:
        _run_each(
            request, queryset, lambda a, o: sync.reset(a, o.monitored_user_id, o.kind), "Reset"
        )


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "state",
        "kind",
        "resumed",
        "trigger",
        "outcome",
        "pages",
        "added",
        "updated",
        "removed",
        "duration_ms",
        "job",
    )
    list_filter = ("kind", "outcome", "resumed")
    list_select_related = ("state__monitored_user",)
    show_full_result_count = False


@admin.register(SyncedItem)
class SyncedItemAdmin(ReadOnlyAdmin):
    list_display = ("item_at", "monitored_user", "kind", "summary", "updated_at", "removed_at")
    list_filter = ("kind",)
    search_fields = ("graph_id", "summary")
    list_select_related = ("monitored_user",)
    show_full_result_count = False


# =====================================================================================
# Outbound mail and Teams messages: read-only; sending and retrying go
# through the messaging package and the job operations.
# =====================================================================================


@admin.register(OutboundMessage)
class OutboundMessageAdmin(BigTableAdminMixin, ReadOnlyAdmin):
    list_display = (
        "id",
        "channel",
        "status",
        "step",
        "sender",
        "subject",
        "created_at",
        "sent_at",
        "job",
        "last_error",
    )
    list_filter = ("status", "channel", "step")
    search_fields = (
        "=idempotency_key",
        "=graph_message_id",
        "=internet_message_id",
        "sender",
        "=chat_id",
        "=correlation_id",
    )
    list_select_related = ("job",)
    raw_id_fields = ("job",)
    date_hierarchy = "created_at"


@admin.register(SendBudget)
class SendBudgetAdmin(ReadOnlyAdmin):
    list_display = ("key", "next_slot_at", "blocked_until", "updated_at")
    search_fields = ("key",)
