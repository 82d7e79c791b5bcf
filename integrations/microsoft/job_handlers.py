"""Job types of the Graph integration. Thin: take ids from the payload, call a service.

Every handler is safe to run twice (delivery is at-least-once): the services take only
work that is still pending, with conditional UPDATEs.
"""

from __future__ import annotations

import time
from typing import Any

from integrations.microsoft import bulk_kinds as _bulk_kinds  # noqa: F401  (registers them)
from integrations.microsoft import (
    messaging_handlers,  # noqa: F401  (outbound messages)
    probe,
    subscriptions,
    sync,
    tenant_chats,
)
from integrations.microsoft.subscriptions import handle_lifecycle_event, maintain
from portal.access.actors import Actor
from portal.jobs.registry import job_handler


@job_handler(
    "graph.lifecycle_event",
    label="Handle subscription lifecycle event",
    max_attempts=8,
    backoff_base=30,
    backoff_cap=1800,
    timeout=120,
    retry_permission="recreate_subscription",
    description="Handle a lifecycle notification (reauthorize, recreate, resync)",
)
def lifecycle_event(job: Any) -> str:
    return handle_lifecycle_event(job.payload["event"])


@job_handler(
    "graph.sync_delta",
    label="Delta sync",
    max_attempts=8,
    backoff_base=15,
    backoff_cap=900,
    timeout=300,
    retry_permission="sync_delta",
    description="Run (or continue) a delta sync for one user and kind",
)
def sync_delta(job: Any) -> dict[str, Any] | None:
    # None when the user was removed since (the claim finds no state).
    run = sync.run(job.payload["state"], job=job, trigger=job.payload.get("trigger", ""))
    if run is None:
        return None
    return {
        "run": run.pk,
        "kind": run.kind,
        "outcome": run.outcome,
        "pages": run.pages,
        "added": run.added,
        "updated": run.updated,
        "removed": run.removed,
    }


@job_handler(
    "graph.subscriptions_maintain",
    label="Subscription upkeep (renew, recreate)",
    max_attempts=3,
    backoff_base=60,
    timeout=280,
    retry_permission="renew_subscription",
    description="Renew subscriptions past half-life, recreate vanished ones",
)
def subscriptions_maintain(job: Any) -> dict[str, int]:
    return maintain(deadline=time.monotonic() + subscriptions.RUN_SECONDS).counts()


def _run_retry_permission(job: Any) -> str:
    return (
        "setup_subscriptions" if job.payload.get("action") == "setup" else "cleanup_subscriptions"
    )


@job_handler(
    "graph.subscriptions_run",
    label="Subscription set-up or clean-up run",
    max_attempts=1,
    timeout=280,
    retry_permission=_run_retry_permission,
    description="Set up all or clean up subscriptions, started from the console",
)
def subscriptions_run(job: Any) -> dict[str, Any]:
    """Runs once (max_attempts=1): a half-done run is finished by the next one or by the
    maintenance schedule, and an operator should see a failure rather than a silent retry."""

    # The role was checked when the operator started (or retried) it; the service audits the
    # run in the name of the console user who did.
    actor = Actor.system(f"console:{job.retried_by or job.payload['started_by']}")
    if job.payload["action"] == "setup":
        summary = subscriptions.setup(actor, deadline=time.monotonic() + subscriptions.RUN_SECONDS)
    else:
        summary = subscriptions.cleanup(actor)
    return {
        "counts": summary.counts(),
        "lines": summary.lines()[-200:],
        "failed": summary.failed[:50],
    }


@job_handler(
    "graph.probe_tick",
    max_attempts=1,  # the next minute's tick measures and sends again
    timeout=120,
    retry_permission="verify_integration",
    description="End-to-end probe: measure open probes, send the one that is due",
)
def probe_tick(job: Any) -> str:
    return probe.tick(job.payload.get("probes"))


@job_handler(
    tenant_chats.MEMBERS_JOB,
    label="Chat members lookup",
    max_attempts=5,
    backoff_base=10,
    timeout=60,
    retry_permission="sync_delta",
    description="Ask Graph who is in a chat (tenant-wide chat subscription), then sync the "
    "monitored members' chats",
)
def chat_members(job: Any) -> dict[str, Any]:
    return tenant_chats.sync_members(str(job.payload["chat_id"]))
