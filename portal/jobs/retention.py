"""How long each kind of record is kept, and the one prune that enforces it.

Apps register a `Retention` in their AppConfig.ready; the `retention.prune` schedule deletes
what is older than its setting allows. It deletes by primary key in batches, each batch its
own short transaction, walking the age index forward, so no long transaction or table lock
holds up the webhook receiver or the workers. Rows that are not finished with (an
unprocessed inbox row, a sync run still running) are never deleted, whatever their age: the
DELETE itself repeats the condition, so a row that changed since it was read is safe too.
A run stopped by the task timeout loses nothing: every batch is committed, the next run goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import models
from django.utils import timezone

logger = logging.getLogger("portal.jobs.retention")

BATCH_SIZE = 1000


@dataclass(frozen=True)
class Retention:
    model: str  # "app_label.ModelName"
    age_field: str  # the date or datetime field the age is measured by
    days_setting: str  # the setting that says how many days to keep ("": `fixed_days`)
    finished: models.Q = field(default_factory=models.Q)  # only rows matching this may go
    # The indexed field the batches walk forward (default: `age_field`). A table whose age field
    # has no index of its own, such as the job queue (every index there costs each state change),
    # walks its primary key through an index the finished condition can use.
    walk_field: str = ""
    fixed_days: float = 0  # days kept when no setting names them (0: gone once past age_field)


RETENTIONS: dict[str, Retention] = {}


def register(retention: Retention) -> None:
    RETENTIONS[retention.model] = retention


def expired(retention: Retention, now: datetime | None = None) -> models.QuerySet[Any]:
    """The rows `retention` lets go: finished with and older than its setting's days."""
    model = apps.get_model(retention.model)
    days = (
        float(getattr(settings, retention.days_setting))
        if retention.days_setting
        else retention.fixed_days
    )
    cutoff: Any = (now or timezone.now()) - timedelta(days=days)
    if not isinstance(model._meta.get_field(retention.age_field), models.DateTimeField):
        cutoff = cutoff.date()
    return model._base_manager.filter(
        retention.finished, **{f"{retention.age_field}__lt": cutoff}
    ).order_by()


def prune(retention: Retention, *, batch_size: int = BATCH_SIZE) -> int:
    """Delete what `retention` lets go, `batch_size` rows per transaction. Returns the count."""
    old = expired(retention)
    label = old.model._meta.label
    walk = retention.walk_field or retention.age_field
    total, reached = 0, None
    while True:
        # Resume where the last batch ended, so old unfinished rows are read once, not once
        # per batch.
        page = old if reached is None else old.filter(**{f"{walk}__gte": reached})
        rows = list(page.order_by(walk, "pk").values_list("pk", walk)[:batch_size])
        if not rows:
            return total
        _, per_model = old.filter(pk__in=[pk for pk, _ in rows]).delete()  # one transaction
        total += per_model.get(label, 0)
        reached = rows[-1][1]
        if len(rows) < batch_size:
            return total


def prune_all(*, batch_size: int = BATCH_SIZE) -> dict[str, int]:
    """Every registered retention, one after the other. Returns rows deleted per model."""
    deleted = {
        name: prune(retention, batch_size=batch_size) for name, retention in RETENTIONS.items()
    }
    if any(deleted.values()):
        logger.info("pruned old records", extra={"deleted": deleted})
    return deleted
