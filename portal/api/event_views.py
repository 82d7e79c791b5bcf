"""The event feed, pulled: GET /api/events with a cursor and long-polling."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from portal.access.actors import Actor
from portal.api.framework import ApiError, api_endpoint
from portal.api.views import int_param
from portal.events import services as events


@api_endpoint(
    "/api/events",
    "GET",
    "read_events",
    "Events after a cursor, oldest first; `wait` long-polls for the first one.",
    query={
        "after": "the cursor (nextCursor of the previous page; omit to start at the beginning)",
        "limit": f"1-{events.MAX_PAGE} (default 100)",
        "types": "comma-separated event types",
        "wait": f"0-{events.MAX_WAIT_SECONDS} seconds to wait for an event",
    },
)
def event_feed(request: HttpRequest, actor: Actor, body: dict) -> dict[str, Any]:
    after = int_param(request, "after", 0, minimum=0) or 0
    limit = int_param(request, "limit", 100, maximum=events.MAX_PAGE) or 100
    wait = int_param(request, "wait", 0, minimum=0, maximum=events.MAX_WAIT_SECONDS) or 0
    try:
        types = events.parse_types(request.GET.get("types", ""))
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", str(exc), field="types") from None
    page = events.read(after, limit=limit, types=types, wait=wait)
    return {
        "events": [events.event_json(e) for e in page],
        "nextCursor": str(page[-1].pk) if page else str(after),
    }
