"""Jobs pages: lists by state, detail, retry, discard, retry all, failure groups, pause."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Q
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from integrations.microsoft import inbox
from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.audit.models import AuditEvent
from portal.console.forms import start_of_day
from portal.console.htmx import HtmxHttpRequest
from portal.console.navigation import redirect_back
from portal.console.paging import empty_page, keyset_page, query_without
from portal.jobs import bulk, services
from portal.jobs.models import BulkOperation, Job, JobAttempt, PausedJobType
from portal.jobs.registry import job_types
from portal.jobs.services import JobActionError, JobFilter
from portal.jobs.stats import state_counts
from portal.lib.redaction import mask_secrets

PAGE_SIZE = 50
GROUP_WINDOW = 5000
# Above this many jobs, retry-all asks the operator to type the count.
TYPED_CONFIRMATION_THRESHOLD = 100
STATUS_TABS = [
    Job.Status.DEAD,
    Job.Status.RETRYING,
    Job.Status.PENDING,
    Job.Status.RUNNING,
    Job.Status.SUCCEEDED,
    Job.Status.CANCELLED,
]


class JobListFilter(forms.Form):
    status = forms.ChoiceField(choices=Job.Status.choices, required=False)
    job_type = forms.CharField(required=False, max_length=64, label="Type")
    signature = forms.CharField(required=False, max_length=16, label="Error signature")
    q = forms.CharField(required=False, max_length=200, label="Search payload and error")
    date_from = forms.DateField(
        required=False, label="Created from", widget=forms.DateInput(attrs={"type": "date"})
    )
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def queryset(self) -> Any:
        data = self.cleaned_data
        queryset = Job.objects.filter(status=data.get("status") or Job.Status.DEAD)
        if data.get("job_type"):
            queryset = queryset.filter(job_type=data["job_type"])
        if data.get("signature"):
            queryset = queryset.filter(error_signature=data["signature"])
        if data.get("q"):
            queryset = queryset.filter(
                Q(payload__icontains=data["q"])
                | Q(last_error__icontains=data["q"])
                | Q(correlation_id=data["q"])
            )
        if data.get("date_from"):
            queryset = queryset.filter(created_at__gte=start_of_day(data["date_from"]))
        return queryset


@require_GET
@requires("view_console")
def job_list(request: HtmxHttpRequest) -> HttpResponse:
    form = JobListFilter(request.GET)
    groups: list[dict] = []
    status = Job.Status.DEAD
    page = empty_page(request)
    if form.is_valid():
        status = form.cleaned_data.get("status") or Job.Status.DEAD
        queryset = form.queryset()
        page = keyset_page(request, queryset, form.cleaned_data.get("before"), PAGE_SIZE)
        if status in (Job.Status.DEAD, Job.Status.RETRYING):
            # Grouped over the latest GROUP_WINDOW failures: bounded however many there are.
            floor = next(
                iter(
                    queryset.order_by("-id").values_list("id", flat=True)[
                        GROUP_WINDOW - 1 : GROUP_WINDOW
                    ]
                ),
                None,
            )
            recent = queryset.filter(id__gte=floor) if floor else queryset
            groups = list(
                recent.values("error_signature", "error_class", "job_type")
                .annotate(count=Count("id"), latest=Max("id"))
                .order_by("-count")[:10]
            )
            latest_errors = dict(
                Job.objects.filter(pk__in=[g["latest"] for g in groups]).values_list(
                    "pk", "last_error"
                )
            )
            for group in groups:
                group["example"] = latest_errors.get(group["latest"], "")
    counts, counts_exact = state_counts()
    context = {
        "form": form,
        "status": status,
        "tabs": [(tab, counts.get(tab, 0), _tab_query(request.GET, tab)) for tab in STATUS_TABS],
        "counts_exact": counts_exact,
        "jobs": page.rows,
        "groups": groups,
        **page.context(),
        "retry_all_query": query_without(request.GET, "q", "date_from"),
        "types": _type_rows(),
        "drain_pause": inbox.pause_state(),
        "can_retry": request.user.has_perm("access.retry_job"),
        "can_retry_all": request.user.has_perm("access.retry_all_jobs"),
        "retryable": services.RETRYABLE,
        "can_pause": request.user.has_perm("access.pause_processing"),
    }
    template = "console/jobs.html#job-table" if request.htmx else "console/jobs.html"
    return render(request, template, context)


def _tab_query(params: QueryDict, status: str) -> str:
    query = params.copy()
    query.pop("before", None)
    query["status"] = status
    return query.urlencode()


def _type_rows() -> list[dict[str, Any]]:
    paused = {row.job_type: row for row in PausedJobType.objects.all()}
    names = {job_type.name for job_type in job_types()} | set(paused)
    return [{"name": name, "paused": paused.get(name)} for name in sorted(names)]


def _job_or_404(job_id: int) -> Job:
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        raise Http404(f"There is no job #{job_id}.")
    return job


@require_GET
@requires("view_console")
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _job_or_404(job_id)
    context = {
        "job": job,
        "payload": mask_secrets(job.payload),
        "attempts": JobAttempt.objects.filter(job=job).order_by("-number"),
        "audit": AuditEvent.objects.filter(target_type="job", target_id=str(job.pk))[:20]
        if request.user.has_perm("access.view_audit")
        else None,
        "can_retry": request.user.has_perm("access.retry_job") and job.status in services.RETRYABLE,
        "can_discard": request.user.has_perm("access.discard_job")
        and job.status in (Job.Status.DEAD, Job.Status.RETRYING, Job.Status.PENDING),
    }
    return render(request, "console/job_detail.html", context)


def _back(request: HttpRequest, fallback: str) -> HttpResponse:
    return redirect_back(request, fallback)


@require_POST
@requires("retry_job")
def job_retry(request: HttpRequest, job_id: int) -> HttpResponse:
    try:
        services.retry_job(Actor.from_request(request), job_id)
    except JobActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Job #{job_id} is queued again; its history is kept.")
    return _back(request, reverse("console:job_detail", args=[job_id]))


@require_POST
@requires("discard_job")
def job_discard(request: HttpRequest, job_id: int) -> HttpResponse:
    try:
        services.discard_job(Actor.from_request(request), job_id, request.POST.get("reason", ""))
    except JobActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Job #{job_id} was discarded.")
    return _back(request, reverse("console:job_detail", args=[job_id]))


class RetryAllForm(forms.Form):
    status = forms.ChoiceField(choices=[(s, s) for s in services.RETRYABLE], required=False)
    job_type = forms.CharField(required=False, max_length=64)
    signature = forms.CharField(required=False, max_length=16)
    confirm_count = forms.CharField(required=False, max_length=12)

    def job_filter(self) -> JobFilter:
        data = self.cleaned_data
        return JobFilter(
            status=data.get("status") or Job.Status.DEAD,
            job_type=data.get("job_type", ""),
            error_signature=data.get("signature", ""),
        )


@requires("retry_all_jobs")
def retry_all(request: HttpRequest) -> HttpResponse:
    """GET: the impact (count and sample). POST: start the bulk retry."""
    form = RetryAllForm(request.POST if request.method == "POST" else request.GET)
    if not form.is_valid():
        return render(request, "console/retry_all.html", {"form": form}, status=400)
    job_filter = form.job_filter()
    actor = Actor.from_request(request)
    preview = services.preview_retry_all(job_filter, actor=actor)
    needs_typing = preview.permitted > TYPED_CONFIRMATION_THRESHOLD
    context = {
        "form": form,
        "preview": preview,
        "needs_typing": needs_typing,
        "filter": job_filter,
        "threshold": TYPED_CONFIRMATION_THRESHOLD,
    }
    if request.method != "POST":
        return render(request, "console/retry_all.html", context)
    if preview.permitted == 0:
        messages.info(request, "Nothing you may retry matches these filters; nothing was retried.")
        return redirect(reverse("console:jobs") + "?" + urlencode({"status": job_filter.status}))
    if needs_typing and (
        form.cleaned_data.get("confirm_count", "").strip() != str(preview.permitted)
    ):
        context["confirm_error"] = f"Type {preview.permitted} to confirm."
        return render(request, "console/retry_all.html", context, status=400)
    try:
        operation = services.start_retry_all(actor, job_filter)
    except JobActionError as exc:
        messages.error(request, str(exc))
        return redirect("console:jobs")
    return redirect("console:bulk_operation", operation_id=operation.pk)


@require_GET
@requires("view_console")
def bulk_operation(request: HtmxHttpRequest, operation_id: int) -> HttpResponse:
    operation = BulkOperation.objects.filter(pk=operation_id).first()
    if operation is None:
        raise Http404("No such operation.")
    kind = bulk.KINDS.get(operation.kind)
    failures = operation.items.filter(result="failed").values_list("target_id", "error")[:20]
    context = {
        "operation": operation,
        "kind": kind,
        "failures": list(failures),
        "can_cancel": kind is not None
        and request.user.has_perm(f"access.{kind.permission}")
        and operation.status in (BulkOperation.Status.PENDING, BulkOperation.Status.RUNNING),
    }
    template = (
        "console/bulk_operation.html#progress" if request.htmx else "console/bulk_operation.html"
    )
    return render(request, template, context)


@require_POST
# Every bulk kind is an operator action; cancel also checks (and audits) the kind's own
# permission, e.g. renew_subscription.
@requires("retry_all_jobs")
def bulk_cancel(request: HttpRequest, operation_id: int) -> HttpResponse:
    try:
        bulk.cancel(Actor.from_request(request), operation_id)
    except bulk.BulkError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Cancelled. What was already done stays done.")
    return redirect("console:bulk_operation", operation_id=operation_id)


@require_POST
@requires("pause_processing")
def job_type_pause(request: HttpRequest) -> HttpResponse:
    job_type = request.POST.get("job_type", "").strip()
    if not job_type or len(job_type) > 64:
        messages.error(request, "Choose a job type.")
        return redirect("console:jobs")
    actor = Actor.from_request(request)
    if request.POST.get("action") == "resume":
        released = services.resume_job_type(actor, job_type)
        messages.success(request, f"{job_type} resumed; {released} waiting jobs released.")
    elif request.POST.get("action") == "pause":
        services.pause_job_type(actor, job_type, request.POST.get("reason", "").strip())
        messages.success(
            request, f"{job_type} paused. New and retried jobs of this type wait; nothing is lost."
        )
    else:
        raise PermissionDenied("Unknown action.")
    return _back(request, reverse("console:jobs"))


@require_POST
@requires("pause_processing")
def inbox_drain_pause(request: HttpRequest) -> HttpResponse:
    """The notification drain's own pause switch (it is not a job type)."""
    actor = Actor.from_request(request)
    if request.POST.get("action") == "resume":
        inbox.resume(actor)
        messages.success(request, "Notification processing resumed; what waited is processed now.")
    elif request.POST.get("action") == "pause":
        inbox.pause(actor, request.POST.get("reason", "").strip())
        messages.success(
            request,
            "Notification processing paused. Notifications are still accepted and wait; "
            "nothing is lost.",
        )
    else:
        raise PermissionDenied("Unknown action.")
    return _back(request, reverse("console:jobs") + "#job-types")
