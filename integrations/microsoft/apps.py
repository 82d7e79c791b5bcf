from django.apps import AppConfig


class MicrosoftConfig(AppConfig):
    name = "integrations.microsoft"
    label = "microsoft"
    verbose_name = "Microsoft Graph integration"

    def ready(self) -> None:
        from portal.jobs.schedules import register

        # Periodic work (django-q2 schedules, created on migrate). Both only enqueue jobs.
        register("graph.webhooks.maintain",
                 "integrations.microsoft.subscriptions.enqueue_maintenance", 10)
        register("graph.sync.interval", "integrations.microsoft.sync.enqueue_interval_syncs", 1)
