"""The stream as the worker runs it: real django-q2 worker processes, the same sink shipped by
several runs at once (tasks take the sink's id and are safe to run twice)."""

from __future__ import annotations

import json
import time

import pytest
from django_q.models import OrmQ
from django_q.tasks import async_task

from portal.access.actors import Actor
from portal.audit.models import AuditEvent, AuditStreamCursor
from portal.audit.services import record

pytestmark = pytest.mark.django_db(transaction=True)


def test_runs_at_once_on_two_worker_processes_ship_each_record_once_in_order(
    qcluster, tmp_path, settings
):
    stream = tmp_path / "audit-stream.jsonl"
    sink = f"file://{stream}"
    settings.AUDIT_STREAM_SINKS = [sink]
    for n in range(60):
        record(f"demo.{n}", actor=Actor.system("tests"))
    for _ in range(6):
        async_task("portal.audit.tasks.ship_audit_sink", sink)
    qcluster(workers=3, AUDIT_STREAM_SINKS=sink, AUDIT_STREAM_BATCH_SIZE="7")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        OrmQ.objects.exists() or not AuditStreamCursor.objects.filter(shipped_total=60).exists()
    ):
        time.sleep(0.2)
    ids = [json.loads(line)["id"] for line in stream.read_text().splitlines()]
    assert ids == list(AuditEvent.objects.order_by("id").values_list("id", flat=True))
    cursor = AuditStreamCursor.objects.get(sink=sink)
    assert (cursor.shipped_total, cursor.lease_token, cursor.last_error) == (60, "", "")
