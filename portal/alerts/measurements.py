"""The Fleet gateway's figures as one bundle, for the dashboard and GET /api/metrics/gateway.

Each figure is defined once, as a QuerySet method on its model; the alerts and /metrics read
the same methods (tests/portal/test_figures.py).
"""

from __future__ import annotations

from typing import Any

from integrations.microsoft.models import OutboundMessage
from portal.events.models import EventEndpoint


def gateway_figures() -> dict[str, Any]:
    oldest = OutboundMessage.objects.oldest_unsent_seconds()
    return {
        "messagesFailedLastHour": OutboundMessage.objects.failed_last_hour(),
        "oldestQueuedMessageSeconds": int(oldest) if oldest is not None else None,
        "endpointsFailing": EventEndpoint.objects.failing().count(),
        "eventBacklog": EventEndpoint.objects.backlog(),
    }
