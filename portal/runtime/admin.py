from django.contrib import admin

from portal.lib.admin_utils import ReadOnlyAdminMixin
from portal.runtime.models import RuntimeSetting


@admin.register(RuntimeSetting)
class RuntimeSettingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Changed on the console's Settings page, which validates and audits."""

    list_display = ("key", "value", "updated_by", "updated_at")
