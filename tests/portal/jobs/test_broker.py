"""The job broker wakes idle workers: a worker waiting for work on PostgreSQL is woken by
the dispatching commit's NOTIFY instead of sleeping out its poll (django-q2's ORM broker
otherwise sleeps Q_CLUSTER["poll"] between empty looks)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from django_q.conf import Conf
from django_q.signing import SignedPackage

from portal.jobs import broker
from portal.jobs.runner import enqueue, queue_key

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def waking_broker(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll")
    # A poll far longer than the test may wait: only a wake-up ends the idle wait in time.
    monkeypatch.setattr(Conf, "POLL", 60)
    monkeypatch.setattr(broker, "_last_wake", {})
    woken = broker.WakingORM(list_key=queue_key(""))
    yield woken
    woken._listener.close()


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
