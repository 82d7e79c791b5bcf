"""Job types of the event feed. Thin: take the id, call the service."""

from __future__ import annotations

from typing import Any

from portal.events.delivery import deliver as deliver_batch
from portal.events.fan_out import fan_out as fan_out_all
from portal.jobs.registry import SucceededWith, job_handler

# Backoff: 30 s doubling to a 2-hour cap, with equal jitter (never under half the delay):
# 32 attempts span at least about 25 hours, the Standard Webhooks receivers' expectation.
DELIVERY_ATTEMPTS = 32


@job_handler(
    "events.deliver",
    label="Event delivery",
    max_attempts=DELIVERY_ATTEMPTS,
    backoff_base=30,
    backoff_cap=7200,
    timeout=30,
    # Re-running a delivery re-sends it: the same as a replay.
    retry_permission="manage_event_endpoints",
    description="POST one signed batch of events to an event endpoint",
    queue="events",
)
def deliver(job: Any) -> str | SucceededWith:
    return deliver_batch(job.payload["delivery"], job)


@job_handler(
    "events.fan_out",
    label="Event fan-out to endpoints",
    max_attempts=3,
    backoff_base=5,
    timeout=60,
    # Harmless to re-run (the one-minute schedule does the same): support may.
    retry_permission="retry_job",
    description="Hand new events to every active endpoint as delivery jobs",
)
def fan_out(job: Any) -> int:
    return fan_out_all()
