"""Long-running processes put what their start-up allocated out of the collector's reach.

CPython's full (generation 2) garbage collection walks every tracked object. After Django's
start-up and our modules' imports a portal process tracks about 115,000 objects, and a full
collection of them took 77-110 ms on the CI kind (2 cores) — a pause at an unpredictable
moment, in the middle of a webhook request or a sync job: bench/end_to_end's p99 tails. Those
objects (modules, classes, URL patterns, settings) live as long as the process, so
`gc.freeze()` moves them to the permanent generation once start-up is done, and later
collections walk only what the process allocated since (the approach of the gc module's
documentation for forked workers).

Called where each long-running process is ready to work: the web server's WSGI application
(portal/wsgi.py), each django-q2 process (its `post_spawn` signal, portal/jobs/apps.py) and
the inbox drain (its command).
"""

from __future__ import annotations

import gc

from django.urls import get_resolver


def freeze_start_up_objects() -> int:
    """Import the URL configuration (the views and what they import), collect once, then
    freeze every object alive: how many are frozen now."""
    get_resolver().url_patterns  # noqa: B018 (imports the URLconf and every view module)
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
