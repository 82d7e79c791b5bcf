"""A django-q2 cluster that has lost a process while it waited on one of its queues starts
over instead of hanging.

django-q2's sentinel replaces a dead worker, monitor or pusher. But the cluster's processes
share multiprocessing queues, and a process blocked reading one holds that queue's lock: an
idle worker holds the task queue's, the monitor the result queue's. SIGKILLed there (the OOM
killer, an operator's kill), it dies with the lock held and every other process blocks on it
for good: the cluster looks alive and runs nothing (bench/soak saw four simulated hours
without a sync; tests/chaos/test_workers_killed.py reproduces it). A lock of a dead process
cannot be told from a live one's, so the only safe repair is new queues, that is a new
cluster: the sentinel stops its processes and exits, and the qcluster process with it; its
supervisor (runportal, Kubernetes' restartPolicy) starts a fresh one within seconds. Runs
that the stop cut short are recovered by the watchdog (their worker process is gone).

A worker that died in the middle of a task (it was not reading a queue), ended for a timeout
or recycled itself is replaced the way django-q2 does it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django_q.cluster import Sentinel

logger = logging.getLogger(__name__)

# django-q2's worker timer: -1 while the worker waits for a task (worker.py); > 0 running one;
# 0 stopped by the guard for a timeout; -2 recycled.
_IDLE = -1
EXIT_STATUS = 75  # EX_TEMPFAIL: start me again

_replace = Sentinel.reincarnate


def may_hold_a_queue_lock(sentinel: Any, process: Any) -> bool:
    """Whether `process` may have died holding a lock of one of the cluster's queues."""
    if process is sentinel.monitor or process is sentinel.pusher:
        return True
    return process in sentinel.pool and process.timer.value == _IDLE


def reincarnate(sentinel: Any, process: Any) -> None:
    if not may_hold_a_queue_lock(sentinel, process):
        _replace(sentinel, process)
        return
    logger.critical(
        "Cluster process %s (pid %s) died while waiting on a queue, whose lock it may still "
        "hold; stopping this cluster so that a fresh one starts.",
        process.name,
        process.pid,
    )
    for other in [*sentinel.pool, sentinel.monitor, sentinel.pusher]:
        if other is not process and other.is_alive():
            other.kill()
    # Not sys.exit: the normal shutdown would wait on the locked queue.
    os._exit(EXIT_STATUS)


def install() -> None:
    Sentinel.reincarnate = reincarnate
