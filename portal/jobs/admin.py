from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import pluralize
from django_q.models import Failure, OrmQ, Schedule, Success

from portal.access.actors import Actor
from portal.jobs import services
from portal.jobs.models import BulkOperation, Job, JobAttempt, PausedJobType, WorkerPing
from portal.lib.admin_utils import BigTableAdminMixin, ReadOnlyAdminMixin

# django-q2's pages would let anyone with the admin name a callable for the worker to run
# (a Schedule's `func`) and edit or delete queued tasks and results, none of it audited.
# django-q2 only executes: our Job table is the record, and schedules come from
# portal.jobs.schedules.
for _model in (Schedule, Success, Failure, OrmQ):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


class JobAttemptInline(admin.TabularInline):
    model = JobAttempt
    extra = 0
    fields = ("number", "started_at", "finished_at", "outcome", "duration_ms", "worker", "error")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(BigTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "job_type",
        "status",
        "attempts",
        "max_attempts",
        "created_at",
        "next_attempt_at",
        "error_signature",
    )
    list_filter = ("status", "job_type")
    search_fields = ("=id", "=correlation_id", "=idempotency_key", "=error_signature")
    ordering = ("-id",)
    inlines = [JobAttemptInline]
    actions = ["retry_selected", "discard_selected"]

    @admin.action(description="Retry the selected jobs (role: support or above)")
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        actor = Actor.from_request(request)
        done, refused = 0, []
        for job in queryset.only("id"):
            try:
                services.retry_job(actor, job.pk)  # checks each job's own permission
                done += 1
            except (services.JobActionError, PermissionDenied) as exc:
                refused.append(f"#{job.pk}: {exc}")
        self.message_user(request, f"{done} job{pluralize(done)} queued again.", messages.SUCCESS)
        for reason in refused[:5]:
            self.message_user(request, reason, messages.WARNING)

    @admin.action(description="Discard the selected jobs (role: operator or above)")
    def discard_selected(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        actor = Actor.from_request(request)
        done = 0
        for job in queryset.only("id"):
            try:
                services.discard_job(actor, job.pk, "discarded in the Django admin")
                done += 1
            except services.JobActionError as exc:
                self.message_user(request, str(exc), messages.WARNING)
            except PermissionDenied as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return
        self.message_user(request, f"{done} job{pluralize(done)} discarded.", messages.SUCCESS)


@admin.register(JobAttempt)
class JobAttemptAdmin(BigTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "job_id", "number", "outcome", "started_at", "duration_ms", "worker")
    list_filter = ("outcome",)
    search_fields = ("=job__id",)
    list_select_related = ("job",)


@admin.register(PausedJobType)
class PausedJobTypeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("job_type", "paused_by", "paused_at", "reason")


@admin.register(BulkOperation)
class BulkOperationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "total",
        "processed",
        "succeeded",
        "skipped",
        "created_by",
        "created_at",
    )
    list_filter = ("status", "kind")


@admin.register(WorkerPing)
class WorkerPingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("nonce", "created_at", "answered_at", "answered_by")
