"""The request type of the JSON API's views, which carry the credential that authenticated them."""

from __future__ import annotations

from django.http import HttpRequest

from portal.access.models import BearerToken


class ApiHttpRequest(HttpRequest):
    """A request the API authenticated: `request.bearer_token` is the person's or the Fleet
    service's token, or is not set for a trusted-network caller; readers use getattr for that
    reason."""

    bearer_token: BearerToken
