"""Graph's webhook endpoints: /api/webhooks/mail, /teams and /lifecycle.

Thin: answer the validation handshake, cap and parse the body, hand the items to
`notifications.ingest()` and answer 202 — or 400/413 for bad input, 503 when nothing could
be stored (so Graph retries for up to 4 hours). No Graph call, no session, no CSRF (Graph
cannot send a token; each item proves itself with its clientState).
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from integrations.microsoft import notifications
from portal.access.addresses import client_ip
from portal.access.decorators import public

logger = logging.getLogger(__name__)


def max_body_bytes() -> int:
    # Graph batches without resource data are a few KB; 1 MB leaves room .
    return int(settings.WEBHOOK_MAX_BODY_BYTES)


def max_token_chars() -> int:
    return int(settings.WEBHOOK_MAX_VALIDATION_TOKEN_CHARS)


def _plain(status: int, text: str = "") -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
    # The token is attacker-controlled text: never let a browser sniff it into HTML.
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"
    return response


def _validation_answer(token: str) -> HttpResponse:
    """200 text/plain with the URL-decoded token as is ("Receive change notifications through
    webhooks")."""
    if len(token) > max_token_chars():
        return _plain(400, "validationToken too long")
    return _plain(200, token)


def _receive(request: HttpRequest, endpoint: str) -> HttpResponse:
    """Answer, and count how long a notification request took to answer (Graph's rule for
    slow endpoints; the validation handshake is not a notification)."""
    started = time.monotonic()
    response = _answer(request, endpoint)
    if request.method == "POST" and "validationToken" not in request.GET:
        notifications.record_answer(time.monotonic() - started)
    return response


def _answer(request: HttpRequest, endpoint: str) -> HttpResponse:
    if request.method not in ("POST", "GET"):
        response = _plain(405, "POST change notifications here")
        response["Allow"] = "GET, POST"
        return response
    if "validationToken" in request.GET:
        return _validation_answer(request.GET["validationToken"])
    if request.method != "POST":
        return _plain(400, "expected a validationToken or a POST of change notifications")
    limit = max_body_bytes()
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _plain(400, "invalid Content-Length")
    if declared > limit:  # refused before reading a byte of it
        return _plain(413, f"body larger than {limit} bytes")
    raw = request.read(limit + 1)
    if len(raw) > limit:
        return _plain(413, f"body larger than {limit} bytes")
    try:
        parsed = notifications.parse_body(raw)
    except notifications.Malformed as exc:
        return _plain(400, str(exc))
    if parsed.validation_token is not None:
        # The runbook's `curl -d '{"validationToken": "..."}'` form of the handshake.
        return _validation_answer(parsed.validation_token)
    try:
        notifications.ingest(endpoint, parsed.items, remote_addr=client_ip(request))
    except notifications.NotYetKnown as exc:
        logger.info(
            "Webhook %s: subscription %s is still being created; answering 503", endpoint, exc
        )
        response = _plain(503, "subscription not registered yet; retry")
        response["Retry-After"] = "10"
        return response
    except DatabaseError:
        logger.exception(
            "Webhook %s: notifications could not be stored; answering 503 so Graph retries",
            endpoint,
        )
        response = _plain(503, "temporarily unable to accept notifications")
        response["Retry-After"] = "30"
        return response
    return _plain(202)


@public
@csrf_exempt
def mail(request: HttpRequest) -> HttpResponse:
    return _receive(request, "mail")


@public
@csrf_exempt
def teams(request: HttpRequest) -> HttpResponse:
    return _receive(request, "teams")


@public
@csrf_exempt
def lifecycle(request: HttpRequest) -> HttpResponse:
    return _receive(request, "lifecycle")
