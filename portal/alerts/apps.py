from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "portal.alerts"
    label = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from portal.alerts import rules  # noqa: F401  (defines the threshold settings)
        from portal.jobs.schedules import register

        register("alerts.evaluate", "portal.alerts.tasks.evaluate_alerts", 1)
        register("audit.verify_chain", "portal.alerts.tasks.check_audit_chain", 60)
