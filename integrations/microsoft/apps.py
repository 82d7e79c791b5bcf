from django.apps import AppConfig


class MicrosoftConfig(AppConfig):
    name = "integrations.microsoft"
    label = "microsoft"
    verbose_name = "Microsoft Graph integration"

    def ready(self) -> None:
        from django.db.models import Q

        from integrations.graph import ports
        from integrations.microsoft.active_credential import DatabaseCredentialStore
        from integrations.microsoft.graph_stores import DatabaseSharedLimits, GraphCallLog
        from integrations.microsoft.models import LifecycleEvent, NotificationInbox, SyncRun
        from integrations.microsoft.teams_sender import delegated_token
        from portal.jobs.retention import Retention
        from portal.jobs.retention import register as keep
        from portal.jobs.schedules import register

        # What the Graph client needs from this app (its ports): the active credential, the
        # call log, the rows behind the shared throttle windows, and the Teams sender's token.
        ports.register(
            credential_store=DatabaseCredentialStore(),
            call_log=GraphCallLog(),
            shared_limits=DatabaseSharedLimits(),
            delegated_token=delegated_token,
        )

        # Periodic work (django-q2 schedules, created on migrate). The first two only
        # enqueue jobs.
        register(
            "graph.webhooks.maintain",
            "integrations.microsoft.subscriptions.enqueue_maintenance",
            5,  # subscriptions.MAINTENANCE_MINUTES
        )
        register("graph.sync.interval", "integrations.microsoft.sync.enqueue_interval_syncs", 1)
        register(
            "graph.credentials.retire_grace", "integrations.microsoft.tasks.retire_expired_grace", 5
        )
        # The inbox drain's safety net: what no `drain_inbox` process took (none running, or a
        # wake-up missed) is drained within a minute.
        register("graph.inbox.sweep", "integrations.microsoft.inbox.sweep", 1)
        # The end-to-end probe: the tick sends when PROBE_INTERVAL_MINUTES have passed.
        register("graph.probe", "integrations.microsoft.probe.enqueue_tick", 1)
        # What the hourly prune may delete, and after how long (rows not yet handled stay).
        keep(Retention("microsoft.GraphCall", "created_at", "GRAPH_CALL_RETENTION_DAYS"))
        keep(
            Retention(
                "microsoft.NotificationInbox",
                "received_at",
                "NOTIFICATION_INBOX_RETENTION_DAYS",
                ~Q(status=NotificationInbox.Status.PENDING),
            )
        )
        keep(
            Retention(
                "microsoft.SyncRun",
                "started_at",
                "SYNC_RUN_RETENTION_DAYS",
                ~Q(outcome=SyncRun.Outcome.RUNNING),
            )
        )
        keep(
            Retention(
                "microsoft.LifecycleEvent",
                "received_at",
                "LIFECYCLE_EVENT_RETENTION_DAYS",
                ~Q(status=LifecycleEvent.Status.RECEIVED),
            )
        )
        keep(Retention("microsoft.WebhookRejection", "day", "WEBHOOK_REJECTION_RETENTION_DAYS"))
        keep(
            Retention(
                "microsoft.NotificationAnswers", "minute", "NOTIFICATION_INBOX_RETENTION_DAYS"
            )
        )
        keep(Retention("microsoft.Probe", "started_at", "NOTIFICATION_INBOX_RETENTION_DAYS"))
