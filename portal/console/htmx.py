"""The request type of console views that answer HTMX swaps."""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    """A request that passed django-htmx's middleware, as django-htmx documents typing it:
    `request.htmx` says whether (and what) an HTMX swap asked for."""

    htmx: HtmxDetails
