"""Two worker nodes (two qcluster processes) sharing one queue: every job runs once, and
both nodes do some of the work. On the ORM broker (PostgreSQL) and on Redis."""

import subprocess
import sys
import time
from collections import Counter

import pytest
import redis
from django.conf import settings
from django.db import connection  # noqa: F401 - used by the skipif condition

from portal.jobs.models import Job, JobAttempt
from tests.conftest import subprocess_env

JOBS = 2000
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "connection.vendor != 'postgresql'",
        reason="several nodes share PostgreSQL, not a SQLite file",
    ),
]


def redis_available() -> bool:
    try:
        return redis.Redis.from_url("redis://127.0.0.1:6379/15").ping()
    except Exception:
        return False


def enqueue_in_subprocess(count: int, **env: str) -> None:
    """Enqueue through a process whose django-q2 broker is configured by `env`."""
    code = (
        "import django; django.setup()\n"
        "from django.db import transaction\n"
        "from portal.jobs.runner import enqueue\n"
        "import tests.portal.jobs.handlers\n"
        f"with transaction.atomic():\n"
        f"    [enqueue('test.count') for _ in range({count})]\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(**env),
        check=True,
        cwd=settings.BASE_DIR,
        timeout=300,
    )


def wait_for_all(timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Job.objects.filter(status="succeeded").count() == JOBS:
            return
        time.sleep(0.5)
    raise AssertionError(
        f"only {Job.objects.filter(status='succeeded').count()} of {JOBS} jobs finished"
    )


def assert_each_job_once_and_work_shared(node_pids: list[int]) -> None:
    assert Job.objects.count() == JOBS
    assert not Job.objects.exclude(runs=1).exists(), "a job ran more than once"
    assert JobAttempt.objects.count() == JOBS
    # Each qcluster runs in its own session, so a worker's process group names its node.
    per_node = dict(Counter(job.result["node"] for job in Job.objects.only("result")))
    assert set(per_node) == set(node_pids), per_node
    assert all(n > 0 for n in per_node.values()), per_node


def test_two_nodes_on_the_orm_broker(qcluster):
    enqueue_in_subprocess(JOBS)
    nodes = [qcluster(workers=2), qcluster(workers=2)]
    wait_for_all()
    assert_each_job_once_and_work_shared([node.pid for node in nodes])


@pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")
def test_two_nodes_on_redis(qcluster):
    redis.Redis.from_url("redis://127.0.0.1:6379/15").flushdb()
    env = {"REDIS_URL": "redis://127.0.0.1:6379/15", "Q_CLUSTER_NAME": "fleet-multinode"}
    enqueue_in_subprocess(JOBS, **env)
    nodes = [qcluster(workers=2, **env), qcluster(workers=2, **env)]
    wait_for_all()
    assert_each_job_once_and_work_shared([node.pid for node in nodes])
