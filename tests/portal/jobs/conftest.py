import pytest
from django_q.models import OrmQ
from django_q.signing import SignedPackage

import tests.portal.jobs.handlers  # noqa: F401  (registers the test job types)
from portal.jobs.runner import RUN_TASK
from tests.conftest import run_queued_jobs


def queued_job_ids() -> list[int]:
    """The job ids waiting on django-q2's ORM broker, oldest first."""
    ids = []
    for row in OrmQ.objects.order_by("id"):
        task = SignedPackage.loads(row.payload)
        assert task["func"] == RUN_TASK
        ids.append(task["args"][0])
    return ids


@pytest.fixture
def drain():
    """Run what is on the broker the way a worker would (one pass, in this process)."""
    return run_queued_jobs
