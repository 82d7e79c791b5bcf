import pytest
from django_q.models import OrmQ

from portal.jobs.models import Job
from portal.jobs.runner import BULK_DISPATCH_MIN, dispatch
from tests.portal.jobs.conftest import queued_job_ids

pytestmark = pytest.mark.django_db


def test_bulk_dispatch_writes_the_packages_django_q2_would(drain):
    jobs = Job.objects.bulk_create(Job(job_type="test.ok") for _ in range(BULK_DISPATCH_MIN + 5))
    ids = [job.pk for job in jobs]
    dispatch(ids)
    assert queued_job_ids() == ids
    assert OrmQ.objects.count() == len(ids)
    assert drain() == ["succeeded"] * len(ids)
