"""The /healthz and /readyz probes."""

import pytest
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper

from portal.jobs.runner import beat

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_a_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_reports_database_broker_and_worker(client):
    body = client.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"] == "ok"
    assert body["checks"]["worker"] == "never seen"
    beat()
    assert client.get("/readyz").json()["checks"]["worker"].startswith("ok")


def test_readyz_is_503_when_the_database_is_down(client, monkeypatch):
    def broken(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(CursorWrapper, "execute", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unreachable"
