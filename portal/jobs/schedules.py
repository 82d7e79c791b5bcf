"""The periodic work, as django-q2 schedules (created or corrected on every migrate).

A function meant to be called by a schedule says so in its docstring ("Schedule entry: …");
tests/portal/jobs/test_schedules.py checks each is registered here.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django_q.models import Schedule

# name -> (function, minutes between runs). django-q2 checks schedules about every 30 s.
SCHEDULES: dict[str, tuple[str, int]] = {
    "jobs.release_due": ("portal.jobs.tasks.release_due_jobs", 1),
    "jobs.watchdog": ("portal.jobs.tasks.requeue_lost_jobs", 1),
    "jobs.heartbeat": ("portal.jobs.tasks.heartbeat", 1),
    "retention.prune": ("portal.jobs.tasks.prune_expired_records", 60),
}


def register(name: str, func: str, minutes: int) -> None:
    """Other apps add their periodic work here too (in their AppConfig.ready)."""
    SCHEDULES[name] = (func, minutes)


def ensure_schedules(sender: Any = None, **kwargs: Any) -> None:
    # A schedule the code no longer has would call a function that is gone: drop it.
    Schedule.objects.filter(
        Q(func__startswith="portal.") | Q(func__startswith="integrations.")
    ).exclude(name__in=SCHEDULES).delete()
    for name, (func, minutes) in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
            },
        )
