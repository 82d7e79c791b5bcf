"""Bulk operations on subscriptions (run through portal.jobs.bulk, with progress)."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet

from integrations.graph.errors import GraphError
from integrations.microsoft import subscriptions
from integrations.microsoft.models import Subscription
from portal.access.actors import Actor
from portal.access.authz import require
from portal.approvals import gate
from portal.jobs import bulk
from portal.jobs.models import BulkOperation

# Above APPROVAL_BULK_THRESHOLD subscriptions, the approval policy may ask for a second person.
BULK_RENEW_ACTION = "subscriptions.bulk_renew"


def expiring(hours: int) -> QuerySet[Subscription]:
    """What "Renew all expiring within N hours" renews (and its preview counts)."""
    return Subscription.objects.expiring_within(timedelta(hours=hours)).filter(
        graph_id__isnull=False
    )


def start_bulk_renew(actor: Actor, hours: int) -> BulkOperation:
    """Renew every subscription expiring within `hours` as a bulk operation."""
    require(actor, "renew_subscription", action="subscription.bulk_renew", target_type="bulk")
    matching = expiring(hours)
    gate.check(actor, BULK_RENEW_ACTION, {"expiring_within_hours": hours}, count=matching.count())
    return bulk.start(actor, "renew_subscriptions", matching, {"expiring_within_hours": hours})


def _renew_chunk(operation: BulkOperation, subscription_ids: list[int]) -> bulk.ChunkResult:
    result = bulk.ChunkResult()
    # The operator's role was checked when the operation started; each renewal is audited
    # under the operation, naming who started it.
    actor = Actor.system(f"bulk #{operation.pk} for {operation.created_by}")
    active = set(
        Subscription.objects.filter(
            pk__in=subscription_ids, state=Subscription.State.ACTIVE, graph_id__isnull=False
        ).values_list("pk", flat=True)
    )
    for subscription_id in subscription_ids:
        if subscription_id not in active:
            continue  # removed or recreated since the preview: skipped
        try:
            subscriptions.renew(actor, subscription_id)
        except (GraphError, Subscription.DoesNotExist) as exc:
            result.failed[subscription_id] = str(getattr(exc, "message", "") or exc)
        else:
            result.done.add(subscription_id)
    return result


bulk.register(
    bulk.BulkKind(
        name="renew_subscriptions",
        label="Renew subscriptions",
        permission="renew_subscription",
        action="subscription.bulk_renew",
        chunk_size=20,
        apply=_renew_chunk,
        back_url="console:subscriptions",
    )
)
