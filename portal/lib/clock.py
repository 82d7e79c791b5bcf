"""The portal's clock for Graph-facing time: subscription lifetimes, renewal at half-life and
the schedules' time slots.

It is `timezone.now()`. Only with SIMULATED_CLOCK_FILE set (allowed against the local Graph
emulator only: settings.py refuses it otherwise) does it add the number of seconds that file
holds, read at call time, so a benchmark (bench/soak) can move the portal's idea of "now"
forward together with the emulator's clock. Leases, retries, timeouts and audit timestamps
stay on real time: those are about the processes, and compressing them would fake failures.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

# (path, inode, mtime_ns, size) -> offset; the file is re-read only when it changes.
_cached: tuple[tuple[str, int, int, int], float] | None = None


def offset_seconds() -> float:
    global _cached
    path = settings.SIMULATED_CLOCK_FILE
    if not path:
        return 0.0
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return 0.0
    key = (path, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    if _cached is not None and _cached[0] == key:
        return _cached[1]
    with open(path, encoding="utf-8") as handle:
        text = handle.read().strip()
    try:
        value = float(text or 0)
    except ValueError:
        return _cached[1] if _cached is not None else 0.0  # caught mid-write: keep the last
    _cached = (key, value)
    return value


def now() -> datetime:
    offset = offset_seconds()
    return timezone.now() + timedelta(seconds=offset) if offset else timezone.now()
