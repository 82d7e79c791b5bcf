"""The audit log page and its CSV export (itself an audited action)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.audit.models import AuditEvent
from portal.audit.services import record
from portal.console import audit_targets
from portal.console.forms import AuditFilterForm
from portal.console.htmx import HtmxHttpRequest
from portal.console.paging import empty_page, keyset_page

AUDIT_PAGE_SIZE = 50


@require_GET
@requires("view_audit")
def audit_log(request: HtmxHttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    page = (
        keyset_page(
            request,
            form.filter(AuditEvent.objects.all()),
            form.cleaned_data.get("before"),
            AUDIT_PAGE_SIZE,
        )
        if form.is_valid()
        else empty_page(request)
    )
    audit_targets.describe(page.rows, request.user)
    context = {
        "form": form,
        "events": page.rows,
        **page.context(),
        "can_export": request.user.has_perm("access.export_audit"),
    }
    template = "console/audit.html#results" if request.htmx else "console/audit.html"
    return render(request, template, context)


class _Echo:
    def write(self, value: str) -> str:
        return value


CSV_COLUMNS = (
    "id",
    "created_at",
    "actor_type",
    "actor_name",
    "actor_role",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "reason",
    "ip",
    "request_id",
    "params",
    "prev_hash",
    "hash",
)


def _csv_rows(queryset: Any) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for event in queryset.iterator(chunk_size=2000):
        row = []
        for column in CSV_COLUMNS:
            value = getattr(event, column)
            row.append(value.isoformat() if column == "created_at" else value)
        yield writer.writerow(_defuse_formulas(row))


def _defuse_formulas(row: list[Any]) -> list[Any]:
    # Spreadsheet programs run cells starting with these characters as formulas.
    return [
        f"'{value}" if isinstance(value, str) and value[:1] in "=+-@\t\r" else value
        for value in row
    ]


@require_GET
@requires("export_audit")
def audit_export(request: HttpRequest) -> HttpResponseBase:
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        return HttpResponse(
            "Invalid filters: "
            + "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items()),
            status=400,
            content_type="text/plain",
        )
    queryset = form.filter(AuditEvent.objects.all()).order_by("id")
    filters = {k: v for k, v in request.GET.items() if v}
    with transaction.atomic():
        # The export is itself recorded, before any row leaves the building.
        upto = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        record(
            "audit.export",
            actor=Actor.from_request(request),
            target_type="audit_log",
            params={"filters": filters, "up_to_event": upto},
        )
    queryset = queryset.filter(id__lte=upto)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(_csv_rows(queryset), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    return response
