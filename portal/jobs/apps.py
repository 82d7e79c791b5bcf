from django.apps import AppConfig

from portal.lib.gc_freeze import freeze_start_up_objects


class JobsConfig(AppConfig):
    name = "portal.jobs"
    label = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        from django.db.models import Q
        from django.db.models.signals import post_migrate
        from django.utils.module_loading import autodiscover_modules
        from django_q.signals import post_spawn

        from portal.jobs import cluster_guard
        from portal.jobs.retention import Retention
        from portal.jobs.retention import register as keep
        from portal.jobs.schedules import ensure_schedules

        # A cluster wedged by a process killed on one of its queues restarts instead of hanging.
        cluster_guard.install()
        # Each django-q2 process (workers, pusher, monitor) freezes its start-up objects.
        post_spawn.connect(_freeze_start_up_objects, dispatch_uid="portal.jobs.gc_freeze")

        # Every app's job_handlers.py registers its job types (the worker needs them all).
        autodiscover_modules("job_handlers")
        # Extra handler modules (plug-ins, and the test suite's handlers in worker processes).
        import importlib

        from django.conf import settings

        for module in settings.JOB_HANDLER_MODULES:
            importlib.import_module(module)
        post_migrate.connect(ensure_schedules, sender=self)

        # Succeeded jobs go after JOB_RETENTION_DAYS (dead ones stay until handled); the walk
        # follows the (status, id) index, as finished_at has none.
        keep(
            Retention(
                "jobs.Job",
                "finished_at",
                "JOB_RETENTION_DAYS",
                finished=Q(status="succeeded"),
                walk_field="id",
            )
        )
        # A worker process not seen for a day is gone (a recycled worker has a new pid).
        keep(Retention("jobs.WorkerHeartbeat", "last_seen", "", fixed_days=1))
        # Answered or abandoned pings are of no use after a day.
        keep(Retention("jobs.WorkerPing", "created_at", "", fixed_days=1))


def _freeze_start_up_objects(sender: object = None, **kwargs: object) -> None:
    freeze_start_up_objects()
