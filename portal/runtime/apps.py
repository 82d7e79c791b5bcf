from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    name = "portal.runtime"
    label = "runtime"
    verbose_name = "Runtime settings"
