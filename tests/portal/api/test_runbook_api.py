"""The runbook's curl commands, as printed, against the API."""

import json

import pytest
from django.core.management import CommandError, call_command

from portal.access.actors import Actor
from portal.access.api_tokens import create_token
from portal.access.models import BearerToken, CredentialFailure
from portal.audit.models import AuditEvent
from portal.jobs.models import BulkOperation, Job
from portal.jobs.runner import enqueue

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


@pytest.fixture
def token_for(personas):
    def make(role, scopes=None):
        return create_token(SYSTEM, personas[role].username, f"{role} token", scopes)[1]

    return make


def auth(token):
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def curl_d(client, path, token, body):
    """What `curl -X POST URL -H 'Authorization: Bearer T' -d '{json}'` sends."""
    return client.post(
        path, data=json.dumps(body), content_type="application/x-www-form-urlencoded", **auth(token)
    )


def dead_job():
    return Job.objects.create(
        job_type="jobs.noop", status=Job.Status.DEAD, last_error="boom", error_signature="abc"
    )


class TestDeadLetterAndRetry:
    def test_list_the_dead_letter_queue(self, client, token_for):
        jobs = [dead_job() for _ in range(3)]
        response = client.get("/api/queue/dead-letter", **auth(token_for("viewer")))
        assert response.status_code == 200
        body = response.json()
        assert body["count"] == 3
        assert [job["id"] for job in body["jobs"]] == [j.pk for j in reversed(jobs)]

    def test_it_pages_by_keyset(self, client, token_for):
        for _ in range(5):
            dead_job()
        token = token_for("viewer")
        first = client.get("/api/queue/dead-letter?limit=2", **auth(token)).json()
        second = client.get(
            f"/api/queue/dead-letter?limit=2&before={first['nextBefore']}", **auth(token)
        ).json()
        assert len(first["jobs"]) == len(second["jobs"]) == 2
        assert first["jobs"][-1]["id"] > second["jobs"][0]["id"]

    def test_retry_specific_job(self, client, token_for):
        job = dead_job()
        response = client.post(f"/api/queue/retry/{job.pk}", **auth(token_for("support")))
        assert response.status_code == 200
        assert response.json()["job"]["status"] == "pending"
        event = AuditEvent.objects.get(action="job.retry")
        assert event.actor_type == "token" and event.actor_role == "support"

    def test_retry_errors_are_json_with_a_reason(self, client, token_for):
        token = token_for("support")
        missing = client.post("/api/queue/retry/999999", **auth(token))
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        bogus = client.post("/api/queue/retry/JOB_ID", **auth(token))
        assert bogus.status_code == 404
        ok = Job.objects.create(job_type="jobs.noop", status=Job.Status.SUCCEEDED)
        conflict = client.post(f"/api/queue/retry/{ok.pk}", **auth(token))
        assert conflict.status_code == 409 and "succeeded" in conflict.json()["detail"]

    def test_retry_all_without_a_body_retries_every_dead_job(self, client, token_for):
        for _ in range(4):
            dead_job()
        response = client.post("/api/queue/retry-all", **auth(token_for("operator")))
        assert response.status_code == 202
        body = response.json()
        assert body["count"] == 4
        operation = BulkOperation.objects.get(pk=body["operationId"])
        status = client.get(body["statusUrl"], **auth(token_for("viewer"))).json()
        assert status["total"] == 4 and status["status"] == operation.status

    def test_retry_all_with_nothing_to_do(self, client, token_for):
        response = client.post("/api/queue/retry-all", **auth(token_for("operator")))
        assert response.status_code == 200 and response.json()["count"] == 0

    def test_retry_all_accepts_a_filter_sent_as_curl_d(self, client, token_for):
        dead_job()
        Job.objects.create(job_type="other", status=Job.Status.DEAD)
        response = curl_d(client, "/api/queue/retry-all", token_for("operator"), {"type": "other"})
        assert response.status_code == 202 and response.json()["count"] == 1

    def test_support_may_not_retry_all_and_the_denial_is_audited(self, client, token_for):
        dead_job()
        response = client.post("/api/queue/retry-all", **auth(token_for("support")))
        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"
        assert AuditEvent.objects.filter(outcome="denied", target_id="/api/queue/retry-all")


class TestAuthentication:
    def test_no_token_is_401(self, client):
        response = client.get("/api/queue/dead-letter")
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"

    def test_a_revoked_or_expired_token_is_401_and_counted(self, client, token_for):
        token = token_for("viewer")
        stored = BearerToken.objects.get()
        BearerToken.objects.update(revoked_at="2026-01-01T00:00:00Z")
        assert client.get("/api/queue/dead-letter", **auth(token)).status_code == 401
        counted = CredentialFailure.objects.get(scope="token_prefix")
        assert (counted.key, counted.count) == (stored.prefix, 1)

    def test_a_token_is_narrowed_by_its_scopes(self, client, token_for):
        token = token_for("operator", ["view_console"])
        dead_job()
        assert client.get("/api/queue/dead-letter", **auth(token)).status_code == 200
        assert client.post("/api/queue/retry-all", **auth(token)).status_code == 403

    def test_a_token_stops_working_when_its_user_is_deactivated(self, client, token_for, personas):
        token = token_for("viewer")
        personas["viewer"].is_active = False
        personas["viewer"].save()
        assert client.get("/api/queue/dead-letter", **auth(token)).status_code == 401

    def test_bad_json_and_wrong_methods(self, client, token_for):
        token = token_for("operator")
        bad = client.post(
            "/api/queue/retry-all", data="{nope", content_type="text/plain", **auth(token)
        )
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_json"
        not_object = client.post(
            "/api/queue/retry-all", data="[1]", content_type="application/json", **auth(token)
        )
        assert not_object.status_code == 400
        wrong_method = client.get("/api/queue/retry-all", **auth(token))
        assert wrong_method.status_code == 405 and wrong_method["Allow"] == "POST"

    def test_only_the_hash_is_stored(self, token_for):
        token = token_for("viewer")
        stored = BearerToken.objects.get()
        assert token not in (stored.token_hash, stored.prefix)
        assert token.startswith(stored.prefix)


class TestMetrics:
    def test_queue_metrics_from_a_trusted_network_need_no_token(self, client):
        enqueue("jobs.noop")
        dead_job()
        response = client.get("/api/metrics/queue")  # REMOTE_ADDR 127.0.0.1
        assert response.status_code == 200
        body = response.json()
        assert (body["pending"], body["dead"]) == (1, 1)
        assert body["byType"]["jobs.noop"] == {"pending": 1, "dead": 1}

    def test_elsewhere_a_token_is_required(self, client, token_for):
        assert client.get("/api/metrics/queue", REMOTE_ADDR="203.0.113.9").status_code == 401
        assert (
            client.get(
                "/api/metrics/queue", REMOTE_ADDR="203.0.113.9", **auth(token_for("viewer"))
            ).status_code
            == 200
        )


class TestTokenCommand:
    def test_create_prints_only_the_token(self, personas, capsys):
        call_command("api_token", "create", "--user", personas["operator"].username)
        out = capsys.readouterr().out.strip()
        assert out.startswith("fgp_") and "\n" not in out
        assert AuditEvent.objects.get(action="api_token.create").params["scopes"] == "role"

    def test_scopes_beyond_the_role_are_refused(self, personas):
        with pytest.raises(CommandError, match="cannot carry more than"):
            call_command(
                "api_token",
                "create",
                "--user",
                personas["viewer"].username,
                "--scopes",
                "retry_all_jobs",
            )
        with pytest.raises(CommandError, match="Unknown scopes"):
            call_command(
                "api_token", "create", "--user", personas["viewer"].username, "--scopes", "fly"
            )

    def test_list_and_revoke(self, personas, capsys):
        call_command("api_token", "create", "--user", personas["viewer"].username)
        raw = capsys.readouterr().out.strip()
        token = BearerToken.objects.get()
        call_command("api_token", "list")
        listing = capsys.readouterr().out
        assert token.prefix in listing and raw not in listing
        call_command("api_token", "revoke", str(token.pk))
        token.refresh_from_db()
        assert token.revoked_at is not None


def test_the_openapi_document_lists_every_endpoint(client):
    document = client.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for path in (
        "/api/queue/dead-letter",
        "/api/queue/retry/{jobId}",
        "/api/queue/retry-all",
        "/api/metrics/queue",
    ):
        assert path in document["paths"]
