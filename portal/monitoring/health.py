"""Probes: /healthz (the process answers) and /readyz (it can do its work)."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django_q.brokers import get_broker

from portal.access.decorators import public
from portal.jobs.liveness import WORKER_STALE_AFTER, worker_heartbeat_age


@public
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@public
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """503 when the database or the broker is unreachable.

    A stale worker heartbeat is reported but does not make the web pods unready: taking the
    console out of the load balancer would hide it exactly when operators need it to see why
    the workers stopped. The worker pods have their own probe (`manage.py worker_health`).
    """
    checks: dict[str, str] = {}
    ready = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unreachable"
        ready = False
    try:
        checks["broker"] = "ok" if get_broker().ping() else "unreachable"
    except Exception:
        checks["broker"] = "unreachable"
    ready = ready and checks["broker"] == "ok"
    if checks["database"] == "ok":
        age = worker_heartbeat_age()
        if age is None:
            checks["worker"] = "never seen"
        else:
            stale = age > WORKER_STALE_AFTER.total_seconds()
            checks["worker"] = f"{'stale' if stale else 'ok'}: last seen {int(age)} s ago"
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
