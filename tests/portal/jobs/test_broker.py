"""The job broker wakes idle workers: a worker waiting for work on PostgreSQL is woken by
the dispatching commit's NOTIFY instead of sleeping out its poll (django-q2's ORM broker
otherwise sleeps Q_CLUSTER["poll"] between empty looks), each queue on its own channel; on
Redis the blocking pop does it. The real-worker tests give the workers a poll far longer
than the test waits (Q_POLL_SECONDS): only a wake-up gets the work done in time."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction
from django_q.conf import Conf
from django_q.signing import SignedPackage

from portal.jobs import broker
from portal.jobs.models import Job
from portal.jobs.runner import enqueue, queue_key
from tests.conftest import subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def waking_broker(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll")
    # A poll far longer than the test may wait: only a wake-up ends the idle wait in time.
    monkeypatch.setattr(Conf, "POLL", 60)
    woken = broker.WakingORM(list_key=queue_key(""))
    yield woken
    woken._listener.close()


def postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll")


def succeeded(job: Job, patience: float = 30) -> Job:
    """Wait for a job to succeed. The patience is a bound against hanging, not a timing
    assertion: the workers' poll (60 s) is longer, so only a wake-up gets it done in time."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status == Job.Status.SUCCEEDED:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job #{job.pk} ({job.job_type}) is {job.status}: no worker was woken")


SLOW_POLL = {"Q_POLL_SECONDS": "60"}


def test_the_cluster_uses_the_waking_broker_with_the_orm(settings):
    if settings.Q_CLUSTER.get("orm"):
        assert settings.Q_CLUSTER["broker_class"] == "portal.jobs.broker.WakingORM"


def test_an_idle_worker_is_woken_by_the_dispatch_and_takes_the_job(waking_broker, monkeypatch):
    assert waking_broker._listener.wait(0) is False  # LISTENing from now on; nothing yet
    waiting = threading.Event()
    listen = waking_broker._listener.wait

    def wait(timeout: float) -> bool:
        waiting.set()  # the worker found nothing and waits: a NOTIFY from now on is queued
        return listen(timeout)

    monkeypatch.setattr(waking_broker._listener, "wait", wait)
    outcome: list[object] = []

    def worker() -> None:
        try:
            outcome.append(waking_broker.dequeue())
        finally:
            connection.close()  # this thread's own connection

    idle = threading.Thread(target=worker)
    idle.start()
    assert waiting.wait(timeout=30)
    with transaction.atomic():
        job = enqueue("test.ok", {})
    idle.join(timeout=30)  # a bound against hanging; the poll alone would take 60 s
    assert not idle.is_alive() and outcome == [None]
    [(_, payload)] = waking_broker.dequeue()
    assert SignedPackage.loads(payload)["args"] == (job.pk,)


def test_every_dispatch_wakes_its_queue_even_right_after_another(waking_broker):
    # A NOTIFY alone costs a round trip, so none is skipped: a job dispatched right after
    # another (a chat message's second member) no longer waits for a listener's poll.
    listener = waking_broker._listener
    listener.listen()
    for _ in range(3):
        with transaction.atomic():
            enqueue("test.ok", {})
        assert listener.wait(5) is True
    assert listener.wait(0) is False  # one wake-up each, none left over


def test_each_queue_has_its_own_channel(waking_broker):
    events = broker.WakingORM(list_key=queue_key("events"))
    try:
        assert events._listener.channel != waking_broker._listener.channel
        assert waking_broker._listener.wait(0) is False and events._listener.wait(0) is False
        with transaction.atomic():
            enqueue("test.count_events", {})
        assert events._listener.wait(30) is True
        # The main queue's workers were not woken for the events queue's job.
        assert waking_broker._listener.wait(0.5) is False
    finally:
        events._listener.close()


def test_real_workers_of_each_queue_are_woken_by_their_own_dispatch(qcluster):
    """One process dispatching to both queues wakes both. (With one channel for all queues,
    the second dispatch's NOTIFY was skipped and the event workers slept out their poll.)"""
    postgres_only()
    qcluster(workers=1, **SLOW_POLL)
    qcluster(workers=1, WORKER_QUEUE="events", **SLOW_POLL)
    main = succeeded(enqueue("test.count", {}))
    events = succeeded(enqueue("test.count_events", {}))
    assert main.result["node"] != events.result["node"]  # each queue's own cluster ran it


def test_a_follow_up_runs_in_the_same_worker_right_after_its_job(qcluster):
    postgres_only()
    qcluster(workers=1, **SLOW_POLL)
    qcluster(workers=1, WORKER_QUEUE="events", **SLOW_POLL)
    chain = succeeded(enqueue("test.chain", {"follow_up": "test.count", "events": True}))
    follow_up = succeeded(Job.objects.get(job_type="test.count"))
    # Never handed to the broker: the worker that ran the chain ran it next.
    assert follow_up.dispatched_at is None
    assert follow_up.result["ran_in"] == chain.result["ran_in"]
    assert follow_up.started_at >= chain.finished_at
    # A job queued the usual way from the same run still wakes its own queue's workers.
    succeeded(Job.objects.get(job_type="test.count_events"))


REDIS_URL = "redis://127.0.0.1:6379/8"


def redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL).ping())
    except Exception:
        return False


def dispatch_from_another_process(code: str, env: dict[str, str]) -> None:
    """Run `code` in a new portal process configured by `env`: django-q2 freezes its broker
    settings at import, so this test process cannot switch to Redis."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"import django; django.setup()\nimport tests.portal.jobs.handlers\n{code}",
        ],
        env=subprocess_env(**env),
        check=True,
        cwd=settings.BASE_DIR,
        timeout=120,
    )


def test_on_redis_the_same_chain_runs_without_polling(qcluster):
    """The Redis broker: dispatch after commit, workers woken by the blocking pop; follow-ups
    run in the worker as on PostgreSQL."""
    postgres_only()  # the workers share the test database with this process
    if not redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {"REDIS_URL": REDIS_URL, "Q_CLUSTER_NAME": "fleet-wake-test", **SLOW_POLL}
    qcluster(workers=1, **env)
    qcluster(workers=1, WORKER_QUEUE="events", **env)
    dispatch_from_another_process(
        "from portal.jobs.runner import enqueue\n"
        "enqueue('test.chain', {'follow_up': 'test.count', 'events': True})\n",
        env,
    )
    chain = succeeded(Job.objects.get(job_type="test.chain"))
    follow_up = succeeded(Job.objects.get(job_type="test.count"))
    assert follow_up.dispatched_at is None
    assert follow_up.result["ran_in"] == chain.result["ran_in"]
    events = succeeded(Job.objects.get(job_type="test.count_events"))
    assert events.result["node"] != chain.result["node"]


def test_on_redis_a_bulk_dispatch_pushes_every_job_once(qcluster):
    """Several jobs dispatched together go to Redis in one RPUSH, each package a job the
    worker runs (the drain dispatches a batch's sync jobs this way)."""
    postgres_only()  # the workers share the test database with this process
    if not redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {"REDIS_URL": REDIS_URL, "Q_CLUSTER_NAME": "fleet-bulk-test", **SLOW_POLL}
    qcluster(workers=1, **env)
    dispatch_from_another_process(
        "from portal.jobs.runner import enqueue_many\n"
        "enqueue_many('test.count', [{'n': n} for n in range(5)])\n",
        env,
    )
    jobs = [succeeded(job) for job in Job.objects.filter(job_type="test.count")]
    assert sorted(job.payload["n"] for job in jobs) == [0, 1, 2, 3, 4]
    assert {job.runs for job in jobs} == {1}


def test_worker_processes_freeze_their_start_up_objects(qcluster):
    """A full garbage collection over a portal process's ~115,000 start-up objects took up to
    110 ms, a pause in the middle of a job; each django-q2 process freezes them once spawned
    (the web server and the drain do the same at their start)."""
    postgres_only()
    qcluster(workers=1, **SLOW_POLL)
    job = succeeded(enqueue("test.gc_frozen", {}))
    assert job.result["frozen"] > 10_000
