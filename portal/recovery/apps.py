from django.apps import AppConfig


class RecoveryConfig(AppConfig):
    """The guided system recovery (services + `manage.py recover`); the console shows it."""

    name = "portal.recovery"
    label = "recovery"
    verbose_name = "Recovery"
