"""Job types for outbound messages (messaging/delivery.py). Thin: take the id, call the service.

Attempts are generous because a run that hands back to wait for its sending slot (the rate
budget) counts as one; backoff honours Graph's Retry-After and the budget's slot time.
"""

from __future__ import annotations

from typing import Any

from integrations.microsoft.messaging.delivery import deliver
from portal.jobs.registry import job_handler


@job_handler(
    "graph.send_mail",
    label="Send e-mail",
    max_attempts=12,
    backoff_base=10,
    backoff_cap=900,
    timeout=120,
    retry_permission="send_messages",  # a re-run sends (once: the guard finds a sent one)
    description="Send one e-mail (draft tagged with the job's key, "
    "then sent; a retry finds the draft or the sent item)",
)
def send_mail(job: Any) -> str:
    return deliver(job.payload["message"], job)


@job_handler(
    "graph.send_teams",
    label="Send Teams message",
    max_attempts=12,
    backoff_base=10,
    backoff_cap=900,
    timeout=120,
    retry_permission="send_messages",  # a re-run sends (once: the guard finds a sent one)
    description="Post one Teams chat or channel message as the connected sender account",
)
def send_teams(job: Any) -> str:
    return deliver(job.payload["message"], job)
