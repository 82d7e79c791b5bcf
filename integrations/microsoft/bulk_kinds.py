"""Bulk operations on subscriptions (run through portal.jobs.bulk, with progress)."""

from __future__ import annotations

from integrations.microsoft import subscriptions
from integrations.microsoft.errors import GraphError
from integrations.microsoft.models import Subscription
from portal.access.actors import Actor
from portal.jobs import bulk
from portal.jobs.models import BulkOperation


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
