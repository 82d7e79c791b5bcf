from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest

from portal.access.actors import Actor
from portal.api import tokens
from portal.api.models import ApiToken
from portal.lib.admin_utils import ReadOnlyAdminMixin


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Tokens are created with `manage.py api_token create`; the hash is never shown."""

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

    @admin.action(description="Revoke the selected tokens")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        actor = Actor.from_request(request)
        try:
            for token in queryset.only("id"):
                tokens.revoke_token(actor, token.pk)
        except PermissionDenied as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, "Revoked.", messages.SUCCESS)
