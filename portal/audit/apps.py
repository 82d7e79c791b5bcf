from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "portal.audit"
    label = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from portal.audit import signals  # noqa: F401  (connects the sign-in receivers)
        from portal.audit.db_roles import grant_after_migrate
        from portal.jobs.schedules import register

        # Sent for each app after all migrations ran (granting again changes nothing).
        post_migrate.connect(grant_after_migrate, dispatch_uid="audit.grant_app_role")
        register("audit.stream", "portal.audit.tasks.ship_audit_stream", 1)
