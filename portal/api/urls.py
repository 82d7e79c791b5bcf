from django.urls import include, path

from portal.api import event_views, message_views, sync_views, views

app_name = "api"

urlpatterns = [
    path("openapi.json", views.openapi, name="openapi"),
    path("queue/dead-letter", views.dead_letter, name="dead_letter"),
    path("queue/retry/<str:job_id>", views.retry_one, name="retry"),
    path("queue/retry-all", views.retry_all, name="retry_all"),
    path("queue/operations/<int:operation_id>", views.operation_status, name="operation"),
    path("metrics/queue", views.metrics_queue, name="metrics_queue"),
    path("metrics/sync", sync_views.metrics_sync, name="metrics_sync"),
    path("metrics/graph", sync_views.metrics_graph, name="metrics_graph"),
    path("sync/reset", sync_views.sync_reset, name="sync_reset"),
    path("sync/full", sync_views.sync_full, name="sync_full"),
    path("sync/delta", sync_views.sync_delta, name="sync_delta"),
    path("sync/state/<str:user_id>/<str:resource_type>", sync_views.sync_state,
         name="sync_state"),
    path("events", event_views.event_feed, name="events"),
    path("messages", message_views.messages_collection, name="messages"),
    path("messages/<str:message_id>", message_views.message_detail, name="message"),
    path("messages/<str:message_id>/cancel", message_views.message_cancel,
         name="message_cancel"),
    path("webhooks/", include("integrations.microsoft.webhook_urls")),
]
