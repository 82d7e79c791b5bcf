from django.apps import AppConfig


class GraphEmulatorConfig(AppConfig):
    name = "integrations.graph_emulator"
    label = "graph_emulator"
    verbose_name = "Microsoft Graph emulator"
    default_auto_field = "django.db.models.BigAutoField"
