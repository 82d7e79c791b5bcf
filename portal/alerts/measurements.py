"""Current values of what the alerts and /metrics watch. Each is one cheap, indexed query."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Min, Q
from django.utils import timezone

from integrations.microsoft.models import Credential, GraphCall, OutboundMessage, Subscription
from portal.alerts.models import AuditChainCheck
from portal.audit.models import AuditEvent
from portal.events.models import EventEndpoint
from portal.events.push import backlog
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


def messages_failed_last_hour() -> int:
    """Outbound e-mails and Teams messages that failed for good in the last hour."""

    return OutboundMessage.objects.filter(
        status=OutboundMessage.Status.FAILED, last_error_at__gte=timezone.now() - HOUR
    ).count()


def oldest_queued_message_seconds() -> float | None:
    """Age of the oldest message not yet sent (queued or being retried); None: none."""

    oldest = OutboundMessage.objects.filter(
        status__in=[OutboundMessage.Status.QUEUED, OutboundMessage.Status.SENDING]
    ).aggregate(oldest=Min("created_at"))["oldest"]
    return (timezone.now() - oldest).total_seconds() if oldest else None


def endpoints_failing() -> int:
    """Event endpoints disabled by failures or 410, or active with a failing delivery."""

    return EventEndpoint.objects.filter(
        Q(state=EventEndpoint.State.DISABLED)
        | Q(state=EventEndpoint.State.ACTIVE, failing_since__isnull=False)
    ).count()


def event_backlog() -> int:
    """Events waiting for delivery, summed over the endpoints that are not paused."""

    return sum(
        backlog(endpoint)
        for endpoint in EventEndpoint.objects.exclude(state=EventEndpoint.State.PAUSED)
    )
