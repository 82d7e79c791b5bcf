from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "portal.events"
    label = "events"
    verbose_name = "Event feed"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from portal.jobs.schedules import register

        # Deliveries are kicked after each commit that appends events; this catches the rest.
        register("events.fan_out", "portal.events.tasks.fan_out", 1)
