from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Fleet Graph Portal"

    def ready(self) -> None:
        from portal import checks  # noqa: F401  (registers the system checks)
        from portal.lib import tracing

        # Every process (web, workers, drains, commands): OTLP export when configured.
        tracing.configure()
