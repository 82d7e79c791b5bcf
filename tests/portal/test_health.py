import json
import logging

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from portal.jobs.models import WorkerHeartbeat
from portal.jobs.runner import beat
from portal.logging import ContextFilter, JsonFormatter, job_id_var, request_id_var

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


def test_worker_health_command():
    with pytest.raises(CommandError, match="ever reported"):
        call_command("worker_health")
    WorkerHeartbeat.objects.create(
        worker="h:1", last_seen=timezone.now() - timezone.timedelta(minutes=10)
    )
    with pytest.raises(CommandError, match=r"60\d s ago"):
        call_command("worker_health")
    beat()
    call_command("worker_health")


def test_json_logs_carry_request_and_job_ids_and_no_secrets():
    record = logging.LogRecord(
        "integrations.microsoft.graph",
        logging.INFO,
        __file__,
        1,
        "Graph API GET /users/{id} 429 client_secret=hunter2",
        (),
        None,
    )
    request_token, job_token = request_id_var.set("req-1"), job_id_var.set("42")
    try:
        ContextFilter().filter(record)
    finally:
        request_id_var.reset(request_token)
        job_id_var.reset(job_token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["request_id"] == "req-1" and entry["job_id"] == "42"
    assert entry["message"].startswith("Graph API GET /users/{id} 429")
    assert "hunter2" not in entry["message"]


def test_every_response_carries_a_request_id(client):
    assert len(client.get("/healthz")["X-Request-ID"]) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"})["X-Request-ID"] == "abc-123"
    unsafe = client.get("/healthz", headers={"X-Request-ID": "<script>"})
    assert unsafe["X-Request-ID"] != "<script>"


def test_html_pages_carry_a_content_security_policy(client):
    response = client.get("/login/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert "Content-Security-Policy" not in client.get("/healthz")
