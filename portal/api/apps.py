from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "portal.api"
    label = "api"
    verbose_name = "API"

    def ready(self) -> None:
        from portal.jobs.retention import Retention
        from portal.jobs.retention import register as keep

        # An Idempotency-Key is remembered until its record expires (API_IDEMPOTENCY_TTL_HOURS).
        keep(Retention("api.IdempotencyRecord", "expires_at", ""))
