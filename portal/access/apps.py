from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_roles_after_migrate(sender: AppConfig, **kwargs: Any) -> None:
    from django.apps import apps

    from portal.access.role_groups import sync_roles

    sync_roles(apps)


class AccessConfig(AppConfig):
    name = "portal.access"
    label = "access"
    verbose_name = "Access control"

    def ready(self) -> None:
        from django.conf import settings

        from portal.access import signals  # noqa: F401  (connects the sign-in receivers)
        from portal.access.credential_limits import KEEP_DAYS
        from portal.jobs.retention import Retention
        from portal.jobs.retention import register as keep
        from portal.jobs.schedules import register

        register(
            "access.recheck_entra",
            "portal.access.tasks.recheck_entra_accounts",
            settings.SSO_ROLE_RECHECK_MINUTES,
        )
        post_migrate.connect(_sync_roles_after_migrate, sender=self)
        keep(Retention("access.CredentialFailure", "window_start", "", fixed_days=KEEP_DAYS))
