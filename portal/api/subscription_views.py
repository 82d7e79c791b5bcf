"""The Subscriptions page's Graph-vs-database comparison, as JSON."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from integrations.microsoft import diagnosis
from portal.access.actors import Actor
from portal.api.framework import ApiError, api_endpoint


@api_endpoint(
    "/api/subscriptions/compare",
    "GET",
    "setup_subscriptions",
    "The database's subscriptions and Graph's GET /subscriptions side by side, with a "
    f"verdict each. Calls Graph: {diagnosis.COMPARES_PER_MINUTE} a minute per person "
    "(429 with Retry-After beyond).",
    responses={"429": "compared too often; see Retry-After"},
)
def subscriptions_compare(request: HttpRequest, actor: Actor, body: dict) -> dict[str, Any]:
    try:
        return diagnosis.compare_with_graph(actor).as_json()
    except diagnosis.CompareLimited as exc:
        raise ApiError(429, "rate_limited", str(exc), retry_after=exc.retry_after) from None
