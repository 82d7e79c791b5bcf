"""A person's console preferences: the time zone the console shows times in (default UTC).

Kept in the session too, so showing a page costs no query (portal.console.middleware)."""

from __future__ import annotations

import zoneinfo
from functools import cache
from typing import Any

from django.db import transaction

from portal.access.actors import Actor
from portal.audit.services import record
from portal.console.models import ConsolePreference

SESSION_KEY = "console.time_zone"
DEFAULT_TIME_ZONE = "UTC"


class PreferenceError(ValueError):
    pass


@cache
def time_zones() -> list[str]:
    return sorted(zoneinfo.available_timezones() - {"localtime", "Factory"})


def time_zone_of(user: Any) -> str:
    found = ConsolePreference.objects.filter(user=user).values_list("time_zone", flat=True)
    return next(iter(found), DEFAULT_TIME_ZONE)


def set_time_zone(actor: Actor, user: Any, time_zone: str) -> str:
    """Show `user` times in `time_zone` (an IANA name); audited."""
    if time_zone not in time_zones():
        raise PreferenceError(f"{time_zone!r} is not a time zone name (e.g. Europe/Berlin).")
    with transaction.atomic():
        before = time_zone_of(user)
        ConsolePreference.objects.update_or_create(user=user, defaults={"time_zone": time_zone})
        record(
            "preference.time_zone",
            actor=actor,
            target_type="user",
            target_id=user.pk,
            params={"before": before, "after": time_zone},
        )
    return time_zone
