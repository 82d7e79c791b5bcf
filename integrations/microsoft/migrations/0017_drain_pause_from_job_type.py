"""The inbox drain's pause moves from a job type to a switch of its own.

Before, pausing the job type `graph.process_notifications` paused the drain, and a job of
that type drained one request's batch of notifications (left from before the inbox became
the queue). That type is gone: a pause of it becomes the drain's pause (who, when and why
kept), and its jobs that had not run are cancelled — their notifications are inbox rows,
which the drain processes like any other. Finished jobs of the type stay as history.
"""

from typing import Any

from django.db import migrations
from django.utils import timezone

LEGACY_TYPE = "graph.process_notifications"
NOT_RUN = ("pending", "retrying")


def pause_moves_to_the_drain(apps: Any, schema_editor: Any) -> None:
    paused_type = apps.get_model("jobs", "PausedJobType")
    drain_pause = apps.get_model("microsoft", "InboxDrainPause")
    job = apps.get_model("jobs", "Job")
    legacy = paused_type.objects.filter(job_type=LEGACY_TYPE).first()
    if legacy is not None:
        drain_pause.objects.get_or_create(
            pk=1,
            defaults={
                "paused_at": legacy.paused_at,
                "paused_by": legacy.paused_by,
                "reason": legacy.reason,
            },
        )
        legacy.delete()
    job.objects.filter(job_type=LEGACY_TYPE, status__in=NOT_RUN).update(
        status="cancelled", finished_at=timezone.now(), next_attempt_at=None
    )


def pause_moves_back(apps: Any, schema_editor: Any) -> None:
    paused_type = apps.get_model("jobs", "PausedJobType")
    drain_pause = apps.get_model("microsoft", "InboxDrainPause")
    current = drain_pause.objects.first()
    if current is not None:
        paused_type.objects.get_or_create(
            job_type=LEGACY_TYPE,
            defaults={"paused_by": current.paused_by, "reason": current.reason},
        )
        paused_type.objects.filter(job_type=LEGACY_TYPE).update(paused_at=current.paused_at)


class Migration(migrations.Migration):
    dependencies = [
        ("microsoft", "0016_inbox_drain_pause"),
        ("jobs", "0008_workerping"),
    ]

    operations = [migrations.RunPython(pause_moves_to_the_drain, pause_moves_back)]
