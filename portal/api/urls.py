from django.urls import include, path

from portal.api import views

app_name = "api"

urlpatterns = [
    path("openapi.json", views.openapi, name="openapi"),
    path("queue/dead-letter", views.dead_letter, name="dead_letter"),
    path("queue/retry/<str:job_id>", views.retry_one, name="retry"),
    path("queue/retry-all", views.retry_all, name="retry_all"),
    path("queue/operations/<int:operation_id>", views.operation_status, name="operation"),
    path("metrics/queue", views.metrics_queue, name="metrics_queue"),
    path("webhooks/", include("integrations.microsoft.webhook_urls")),
]
