"""The checklist's queue check lives with the alert rules it reads; the alerts add it."""

import pytest

from integrations.microsoft import verify
from portal.alerts.queue_check import check_queue
from portal.jobs.models import Job

pytestmark = pytest.mark.django_db


def test_the_checklist_ends_with_the_queue_check_the_alerts_add():
    assert verify.CHECKS[-1] is check_queue
    verify.add_check(check_queue)  # start-up running twice adds nothing
    assert verify.CHECKS.count(check_queue) == 1


def test_the_queue_check_reads_the_rules_figures():
    assert check_queue(None).detail == "0 due, 0 dead"
    Job.objects.create(job_type="graph.sync_delta", status=Job.Status.DEAD)
    assert check_queue(None).detail == "0 due, 1 dead"
