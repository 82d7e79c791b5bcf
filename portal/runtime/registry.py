"""Settings operators change at run time (the runbook's `kubectl set env`), with validation.

Stored in the database, read through a short per-process cache, so a change reaches every web
and worker process within CACHE_SECONDS without a restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record
from portal.runtime.models import RuntimeSetting

CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class SettingSpec:
    key: str
    label: str
    help: str
    kind: type
    default: Any
    minimum: int | None = None
    maximum: int | None = None
    group: str = "Sync"

    def parse(self, raw: Any) -> Any:
        """Turn form or JSON input into a valid value, or raise ValueError saying why."""
        if self.kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "on", "yes"}:
                return True
            if text in {"0", "false", "off", "no", ""}:
                return False
            raise ValueError(f"{self.label} must be on or off.")
        if self.kind is int:
            try:
                value = int(str(raw).strip())
            except ValueError:
                raise ValueError(f"{self.label} must be a whole number.") from None
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{self.label} must be at least {self.minimum}.")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"{self.label} must be at most {self.maximum}.")
            return value
        raise TypeError(self.kind)


SPECS: dict[str, SettingSpec] = {}


def define(spec: SettingSpec) -> SettingSpec:
    SPECS[spec.key] = spec
    return spec


define(
    SettingSpec(
        "ENABLE_REALTIME_SYNC",
        "Real-time sync",
        "On: each change notification runs a delta sync for that user at once. Off: "
        "notifications only mark the user due for the next interval run (fewer "
        "Graph calls while throttled).",
        bool,
        True,
    )
)
define(
    SettingSpec(
        "SYNC_INTERVAL_MINUTES",
        "Sync interval (minutes)",
        "How often every monitored user gets a delta sync.",
        int,
        5,
        1,
        1440,
    )
)

_cache: dict[str, tuple[float, Any]] = {}


def get(key: str) -> Any:
    spec = SPECS[key]
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]

    row = RuntimeSetting.objects.filter(key=key).values_list("value", flat=True).first()
    value = spec.default if row is None else row
    _cache[key] = (now, value)
    return value


def clear_cache() -> None:
    _cache.clear()


def set_value(actor: Actor, key: str, raw: Any, reason: str = "") -> Any:
    """Validate and store a new value; audited with before and after."""
    require(
        actor,
        "change_runtime_settings",
        action="settings.change",
        target_type="setting",
        target_id=key,
    )
    if key not in SPECS:
        raise ValueError(f"Unknown setting {key!r}.")
    value = SPECS[key].parse(raw)

    with transaction.atomic():
        before = get_uncached(key)
        RuntimeSetting.objects.update_or_create(
            key=key, defaults={"value": value, "updated_by": actor.name}
        )
        record(
            "settings.change",
            actor=actor,
            target_type="setting",
            target_id=key,
            params={"before": before, "after": value},
            reason=reason,
        )
    _cache.pop(key, None)
    return value


def set_values(actor: Actor, raw_values: dict[str, Any], reason: str = "") -> dict[str, Any]:
    """Several settings at once (a group's form): all valid or none stored; each change is
    audited as by set_value; unchanged ones are left alone. Returns what changed."""
    parsed = {}
    for key, raw in raw_values.items():
        if key not in SPECS:
            raise ValueError(f"Unknown setting {key!r}.")
        parsed[key] = SPECS[key].parse(raw)
    changed = {}
    with transaction.atomic():
        for key, value in parsed.items():
            if get_uncached(key) != value:
                changed[key] = set_value(actor, key, value, reason)
    return changed


def get_uncached(key: str) -> Any:
    _cache.pop(key, None)
    return get(key)
