"""`manage.py dead_letter list|retry ID|retry-all`: the runbook's dead-letter queue calls.

The same services as the jobs pages and `/api/queue/…`: `retry` is `retry_job`, `retry-all`
starts the same background bulk operation over the ids frozen now, `--dry-run` shows the
same preview. Commands act as the system (`cli:<os account>:dead_letter` in the audit log).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet
from django.template.defaultfilters import pluralize
from django.urls import reverse

from portal.access.actors import Actor
from portal.approvals import commands as approvals
from portal.jobs import services
from portal.jobs.models import Job
from portal.jobs.registry import job_types
from portal.jobs.services import JobActionError, JobFilter

LIST_LIMIT = 50
ERROR_WIDTH = 70


class Command(BaseCommand):
    help = "List, retry or retry all dead jobs (the dead-letter queue)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(
            dest="action", required=True, metavar="list|retry|retry-all"
        )
        listing = actions.add_parser("list", help="Dead jobs, newest first.")
        listing.add_argument("--type", default="", metavar="T", help="Only jobs of this type.")
        listing.add_argument(
            "--limit",
            type=int,
            default=LIST_LIMIT,
            help=f"Show at most this many (default {LIST_LIMIT}).",
        )
        one = actions.add_parser("retry", help="Retry one dead, retrying or cancelled job now.")
        one.add_argument("job_id", metavar="ID", help="The job's id.")
        one.add_argument("--dry-run", action="store_true", help="Show the job; change nothing.")
        every = actions.add_parser("retry-all", help="Retry every dead job (in the background).")
        every.add_argument("--type", default="", metavar="T", help="Only jobs of this type.")
        every.add_argument(
            "--dry-run",
            action="store_true",
            help="Count and show what would be retried; change nothing.",
        )
        approvals.add_arguments(every)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "list":
                self._list(self._filter(options["type"]), options["limit"])
            elif action == "retry":
                self._retry(options["job_id"], dry_run=options["dry_run"])
            else:
                self._retry_all(self._filter(options["type"]), options)
        except JobActionError as exc:
            raise CommandError(str(exc)) from None

    def _filter(self, job_type: str) -> JobFilter:
        job_type = job_type.strip()
        known = {t.name for t in job_types()}
        if (
            job_type
            and job_type not in known
            and not Job.objects.filter(job_type=job_type).exists()
        ):
            raise CommandError(
                f"Unknown job type {job_type!r}. Known types: {', '.join(sorted(known))}."
            )
        return JobFilter(status=Job.Status.DEAD, job_type=job_type)

    def _list(self, job_filter: JobFilter, limit: int) -> None:
        if limit < 1:
            raise CommandError("--limit must be at least 1.")
        queryset = job_filter.queryset()
        total = queryset.count()
        self.stdout.write(f"{total} dead job{pluralize(total)}{self._of_type(job_filter)}.")
        self._table(queryset.order_by("-id")[:limit])
        if total > limit:
            self.stdout.write(f"… and {total - limit} more (--limit).")

    def _retry(self, job_id: str, *, dry_run: bool) -> None:
        if not job_id.isdigit():
            raise CommandError(f"A job id is a whole number, not {job_id!r}.")
        if dry_run:
            job = Job.objects.filter(pk=int(job_id)).first()
            if job is None:
                raise CommandError(f"There is no job #{job_id}.")
            retryable = job.status in services.RETRYABLE
            self._table([job])
            self.stdout.write(
                f"Dry run: job #{job.pk} "
                f"{'would be retried' if retryable else 'cannot be retried'} "
                f"({job.status})."
            )
            return
        job = services.retry_job(Actor.command("dead_letter"), job_id)
        self.stdout.write(
            self.style.SUCCESS(f"Job #{job.pk} ({job.job_type}) is {job.status} again.")
        )

    def _retry_all(self, job_filter: JobFilter, options: dict[str, Any]) -> None:
        of_type = self._of_type(job_filter)
        if options["dry_run"]:
            preview = services.preview_retry_all(job_filter, actor=Actor.command("dead_letter"))
            self.stdout.write(
                f"Dry run: {preview.count} dead job{pluralize(preview.count)}{of_type} would be "
                "retried."
            )
            self._table(preview.sample)
            return
        if not job_filter.queryset().exists():
            self.stdout.write(f"No dead jobs{of_type}: nothing to retry.")
            return
        operation = approvals.run_covered(
            self,
            options,
            Actor.command("dead_letter"),
            lambda actor: services.start_retry_all(actor, job_filter),
        )
        if operation is None:
            return  # an approval request was filed
        progress = settings.PUBLIC_BASE_URL.rstrip("/") + reverse(
            "console:bulk_operation", args=[operation.pk]
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Retrying {operation.total} dead job{pluralize(operation.total)}{of_type} as bulk "
                f"operation #{operation.pk}; a worker works through them. Progress: {progress} "
                f"(or GET /api/queue/operations/{operation.pk})."
            )
        )

    @staticmethod
    def _of_type(job_filter: JobFilter) -> str:
        return f" of type {job_filter.job_type}" if job_filter.job_type else ""

    def _table(self, jobs: QuerySet[Job] | list[Job]) -> None:
        for job in jobs:
            finished = f"{job.finished_at:%Y-%m-%d %H:%M}" if job.finished_at else "-"
            error = " ".join(job.last_error.split())
            if len(error) > ERROR_WIDTH:
                error = error[: ERROR_WIDTH - 1] + "…"
            self.stdout.write(
                f"#{job.pk:<8} {job.job_type:<32} {job.status:<9} "
                f"runs {job.runs:<3} {finished:<16} {error}"
            )
