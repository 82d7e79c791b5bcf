from django.urls import include, path

from portal.api import (
    approval_views,
    endpoint_views,
    event_views,
    message_views,
    subscription_views,
    sync_views,
    views,
)

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
    path("graph/mailbox-backoff", sync_views.mailbox_backoff, name="mailbox_backoff"),
    path("metrics/gateway", views.metrics_gateway, name="metrics_gateway"),
    path("sync/reset", sync_views.sync_reset, name="sync_reset"),
    path("sync/full", sync_views.sync_full, name="sync_full"),
    path("sync/delta", sync_views.sync_delta, name="sync_delta"),
    path("sync/state/<str:user_id>/<str:resource_type>", sync_views.sync_state, name="sync_state"),
    path("sync/diagnosis/<str:user_id>", sync_views.sync_diagnosis, name="sync_diagnosis"),
    path(
        "subscriptions/compare",
        subscription_views.subscriptions_compare,
        name="subscriptions_compare",
    ),
    path("events", event_views.event_feed, name="events"),
    path("event-endpoints", endpoint_views.endpoints_collection, name="event_endpoints"),
    path(
        "event-endpoints/<str:endpoint_id>", endpoint_views.endpoint_detail, name="event_endpoint"
    ),
    path(
        "event-endpoints/<str:endpoint_id>/pause",
        endpoint_views.endpoint_pause,
        name="event_endpoint_pause",
    ),
    path(
        "event-endpoints/<str:endpoint_id>/resume",
        endpoint_views.endpoint_resume,
        name="event_endpoint_resume",
    ),
    path(
        "event-endpoints/<str:endpoint_id>/rotate-secret",
        endpoint_views.endpoint_rotate,
        name="event_endpoint_rotate",
    ),
    path(
        "event-endpoints/<str:endpoint_id>/test",
        endpoint_views.endpoint_test,
        name="event_endpoint_test",
    ),
    path(
        "event-endpoints/<str:endpoint_id>/replay",
        endpoint_views.endpoint_replay,
        name="event_endpoint_replay",
    ),
    path(
        "event-deliveries/<str:delivery_id>/replay",
        endpoint_views.delivery_replay,
        name="event_delivery_replay",
    ),
    path("messages", message_views.messages_collection, name="messages"),
    path("messages/<str:message_id>", message_views.message_detail, name="message"),
    path("messages/<str:message_id>/cancel", message_views.message_cancel, name="message_cancel"),
    path("approvals", approval_views.approvals_collection, name="approvals"),
    path("approvals/<int:request_id>", approval_views.approval_detail, name="approval"),
    path("approvals/<int:request_id>/approve", approval_views.approval_approve),
    path("approvals/<int:request_id>/reject", approval_views.approval_reject),
    path("approvals/<int:request_id>/withdraw", approval_views.approval_withdraw),
    path("approvals/<int:request_id>/review", approval_views.approval_review),
    path("approvals/<int:request_id>/secret", approval_views.approval_secret),
    path("webhooks/", include("portal.api.webhook_urls")),
]
