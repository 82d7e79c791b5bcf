"""Structured logs with request and job ids, and the headers the middleware adds."""

import json
import logging

import pytest

from portal.lib.logging import ContextFilter, JsonFormatter, job_id_var, request_id_var

pytestmark = pytest.mark.django_db


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
