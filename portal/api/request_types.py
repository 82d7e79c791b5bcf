"""The request type of the JSON API's views, which carry the credential that authenticated them."""

from __future__ import annotations

from django.http import HttpRequest

from portal.access.models import ServiceClientToken
from portal.api.models import ApiToken


class ApiHttpRequest(HttpRequest):
    """A request the API authenticated: exactly one of `request.api_token` (a person's token) or
    `request.service_client_token` (a Fleet service's) is set, or neither for a trusted-network
    caller; readers use getattr for that reason."""

    api_token: ApiToken
    service_client_token: ServiceClientToken
