from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "portal.alerts"
    label = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from integrations.graph import ports
        from integrations.microsoft import verify
        from portal.access.signals import break_glass_used
        from portal.alerts import rules  # noqa: F401  (defines the threshold settings)
        from portal.alerts.queue_check import check_queue
        from portal.alerts.services import record_chain_verification
        from portal.alerts.token_health import record_outcome
        from portal.approvals.signals import break_glass_changed
        from portal.audit.verification import chain_verified
        from portal.jobs.retention import Retention
        from portal.jobs.retention import register as keep
        from portal.jobs.schedules import register

        chain_verified.connect(record_chain_verification, dispatch_uid="alerts.audit_chain")

        register("alerts.evaluate", "portal.alerts.tasks.evaluate_alerts", 1)
        register("audit.verify_chain", "portal.alerts.tasks.check_audit_chain", 60)
        register("alerts.downsample_samples", "portal.alerts.tasks.downsample_samples", 10)
        # A cached token hides a refused credential for up to an hour: ask every minute.
        register("graph.token.check", "portal.alerts.token_health.check", 1)
        ports.observe_tokens(record_outcome)
        verify.add_check(check_queue)
        keep(Retention("alerts.MetricSample", "taken_at", "METRIC_SAMPLE_RETENTION_DAYS"))
        break_glass_used.connect(_raise_break_glass_alert, dispatch_uid="break-glass-alert")
        break_glass_changed.connect(_raise_approval_alert, dispatch_uid="approval-bypassed-alert")


def _raise_break_glass_alert(sender: object, **kwargs: object) -> None:
    from portal.alerts.services import evaluate_rule

    evaluate_rule("break_glass_sign_in")


def _raise_approval_alert(sender: object, **kwargs: object) -> None:
    from portal.alerts.services import evaluate_rule

    evaluate_rule("approval_break_glass")
