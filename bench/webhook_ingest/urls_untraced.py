"""The bench's URLs, loaded once the apps are: the receiver's one tracing call (the inbox
row's traceparent, "" when tracing is off) replaced by the constant it returns, so this
server runs the request without any tracing code."""

from bench.webhook_ingest.urls import urlpatterns
from integrations.microsoft import notifications


def _no_tracing() -> str:
    return ""


notifications.current_traceparent = _no_tracing

__all__ = ["urlpatterns"]
