"""Current values of what the alerts and /metrics watch. Each is one cheap, indexed query."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count, Min, Q
from django.utils import timezone

from integrations.microsoft.models import Credential, GraphCall, OutboundMessage, Subscription
from portal.alerts.models import AuditChainCheck
from portal.audit.models import AuditEvent
from portal.events.models import EventEndpoint
from portal.jobs.models import Job
from portal.jobs.stats import active_counts

HOUR = timedelta(hours=1)


def job_counts() -> dict[str, int]:
    """Jobs by state, leaving out succeeded (the big, uninteresting partition)."""

    return active_counts()


def queue_length() -> int:
    counts = job_counts()
    return counts[Job.Status.PENDING] + counts[Job.Status.RETRYING]


def dead_letters() -> int:
    return Job.objects.filter(status=Job.Status.DEAD).count()


def graph_calls_last_hour() -> dict[str, int]:
    return GraphCall.objects.filter(created_at__gte=timezone.now() - HOUR).aggregate(
        total=Count("id"),
        failed=Count("id", filter=Q(status__isnull=True) | Q(status__gte=400)),
        throttled=Count("id", filter=Q(throttled=True)),
    )


def subscriptions_expiring(within: timedelta) -> tuple[int, float | None]:
    """(active subscriptions expiring within `within`, seconds until the soonest expiry)."""

    now = timezone.now()
    active = Subscription.objects.filter(state=Subscription.State.ACTIVE)
    soonest = active.aggregate(soonest=Min("expiration"))["soonest"]
    expiring = active.filter(expiration__lt=now + within).count()
    return expiring, (soonest - now).total_seconds() if soonest else None


def secret_expires_in() -> float | None:
    """Seconds until the active client secret expires (None: no expiry known)."""

    expires = (
        Credential.objects.filter(state=Credential.State.ACTIVE)
        .values_list("expires_at", flat=True)
        .first()
    )
    return (expires - timezone.now()).total_seconds() if expires else None


def audit_chain_ok() -> bool | None:
    latest = AuditChainCheck.objects.order_by("-id").values_list("ok", flat=True).first()
    return latest


def break_glass_sign_ins(within: timedelta) -> int:
    """Password sign-ins by break-glass accounts (audited as auth.break_glass) lately."""

    return AuditEvent.objects.filter(
        action="auth.break_glass", created_at__gte=timezone.now() - within
    ).count()


def gateway_figures() -> dict[str, Any]:
    """The Fleet gateway's four figures, for the dashboard and GET /api/metrics/gateway
    (the alerts and /metrics read the same queryset methods)."""
    oldest = OutboundMessage.objects.oldest_unsent_seconds()
    return {
        "messagesFailedLastHour": OutboundMessage.objects.failed_last_hour(),
        "oldestQueuedMessageSeconds": int(oldest) if oldest is not None else None,
        "endpointsFailing": EventEndpoint.objects.failing().count(),
        "eventBacklog": EventEndpoint.objects.backlog(),
    }
