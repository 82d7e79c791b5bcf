from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "portal.events"
    label = "events"
    verbose_name = "Event feed"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models import Exists, OuterRef, Q

        from portal.events.models import EventDelivery, EventEndpoint
        from portal.jobs.retention import Retention
        from portal.jobs.retention import register as keep
        from portal.jobs.schedules import register

        # Deliveries are kicked after each commit that appends events; this catches the rest.
        register("events.fan_out", "portal.events.tasks.fan_out", 1)
        # What the hourly retention.prune may delete: an event no endpoint (active, paused or
        # disabled: each may still resume) has yet to be handed, and deliveries that are
        # done with. A delivery carries its own body, so replays do not need the events.
        keep(
            Retention(
                "events.Event",
                "created_at",
                "EVENT_RETENTION_DAYS",
                Q(~Exists(EventEndpoint.objects.filter(cursor__lt=OuterRef("pk")))),
            )
        )
        keep(
            Retention(
                "events.EventDelivery",
                "created_at",
                "EVENT_RETENTION_DAYS",
                Q(status__in=[EventDelivery.Status.DELIVERED, EventDelivery.Status.FAILED]),
            )
        )
