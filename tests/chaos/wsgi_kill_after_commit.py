"""The portal's WSGI application for the inbox chaos test: a web worker SIGKILLs itself right
after the receiver's INSERT returned — committed (one statement, autocommit) — and before
its 202 goes out, for CHAOS_KILL_FRACTION of the inserts. gunicorn starts a new worker."""

from __future__ import annotations

import os
import random
import signal
from typing import Any

from django.core.wsgi import get_wsgi_application
from django.db import connection

portal = get_wsgi_application()
FRACTION = float(os.environ.get("CHAOS_KILL_FRACTION", "0"))
_rng = random.Random()


def _kill_after_commit(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    result = execute(sql, params, many, context)
    if (
        sql.startswith("INSERT INTO microsoft_notificationinbox")
        and connection.get_autocommit()
        and _rng.random() < FRACTION
    ):
        os.kill(os.getpid(), signal.SIGKILL)
    return result


def application(environ: dict, start_response: Any) -> Any:
    with connection.execute_wrapper(_kill_after_commit):
        return portal(environ, start_response)
