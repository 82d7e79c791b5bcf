from django.apps import AppConfig


class MicrosoftConfig(AppConfig):
    name = "integrations.microsoft"
    label = "microsoft"
    verbose_name = "Microsoft Graph integration"
