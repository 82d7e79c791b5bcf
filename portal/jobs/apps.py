from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "portal.jobs"
    label = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate
        from django.utils.module_loading import autodiscover_modules

        from portal.jobs import cluster_guard
        from portal.jobs.schedules import ensure_schedules

        # A cluster wedged by a process killed on one of its queues restarts instead of hanging.
        cluster_guard.install()

        # Every app's job_handlers.py registers its job types (the worker needs them all).
        autodiscover_modules("job_handlers")
        # Extra handler modules (plug-ins, and the test suite's handlers in worker processes).
        import importlib

        from django.conf import settings

        for module in settings.JOB_HANDLER_MODULES:
            importlib.import_module(module)
        post_migrate.connect(ensure_schedules, sender=self)
