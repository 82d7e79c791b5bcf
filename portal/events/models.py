from __future__ import annotations

from django.db import models
from django.utils import timezone


class Event(models.Model):
    """A fact the portal learned (a mail arrived, a message was sent…), for the Fleet side.

    Append-only: rows are never changed or deleted except by retention pruning. The id is the
    feed's cursor: appends are serialised until commit (services.emit), so ids become
    visible in increasing order and a reader that remembers the last id misses nothing.
    """

    id = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=40)
    occurred_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    # What the event is about, for filtering and grouping (e.g. the monitored user's id).
    subject = models.CharField(max_length=255, blank=True)
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["type", "id"], name="event_type_id_idx")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.type}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValueError("Events are append-only.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]
