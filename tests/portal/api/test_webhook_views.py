"""The receiver: validation handshake, size and shape checks, clientState, inbox, 503."""

from __future__ import annotations

import logging
from datetime import timedelta
from unittest import mock

import pytest
from django.db import OperationalError, connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from integrations.microsoft import inbox, notifications
from integrations.microsoft.models import (
    GraphCall,
    LifecycleEvent,
    NotificationInbox,
    Subscription,
    WebhookRejection,
)
from portal.jobs.models import Job
from tests.integrations.microsoft.webhook_support import make_sub, notification, post_json

pytestmark = pytest.mark.django_db
URLS = ["/api/webhooks/mail", "/api/webhooks/teams", "/api/webhooks/lifecycle"]
TOKEN = "Validation: Testing client application reachability for subscription Request-Id: 1"


@pytest.fixture
def emulator_user():
    # The receiver tests need no emulator: a fixed user stands in.
    return {
        "id": "0b2a1c2d-0000-4000-8000-000000000001",
        "userPrincipalName": "maria@fleetdemo.test",
        "displayName": "Maria",
    }


class TestValidation:
    @pytest.mark.parametrize("url", URLS)
    def test_it_echoes_the_url_decoded_query_token_as_plain_text(self, client, url):
        response = client.post(
            f"{url}?validationToken=Validation%3A%20a%20b%26c%3Cscript%3E",
            data=b"",
            content_type="text/plain; charset=utf-8",
        )
        assert response.status_code == 200
        assert response.content == b"Validation: a b&c<script>"
        assert response["Content-Type"].startswith("text/plain")
        assert response["X-Content-Type-Options"] == "nosniff"

    def test_get_works_too_for_verify_integration(self, client):
        response = client.get("/api/webhooks/mail", {"validationToken": TOKEN})
        assert response.status_code == 200 and response.content.decode() == TOKEN

    @pytest.mark.parametrize(
        "content_type", ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
    )
    def test_the_runbook_json_body_form_with_any_content_type(self, client, content_type):
        response = client.post(
            "/api/webhooks/teams", data=b'{"validationToken": "abc 123"}', content_type=content_type
        )
        assert response.status_code == 200
        assert response.content == b"abc 123"
        assert response["X-Content-Type-Options"] == "nosniff"

    def test_a_token_over_the_cap_is_refused(self, client, settings):
        settings.WEBHOOK_MAX_VALIDATION_TOKEN_CHARS = 10
        response = client.post("/api/webhooks/mail?validationToken=" + "a" * 11)
        assert response.status_code == 400

    def test_no_session_or_csrf_is_needed(self, client):
        client.handler.enforce_csrf_checks = True
        response = client.post(f"/api/webhooks/mail?validationToken={TOKEN}")
        assert response.status_code == 200
        assert "sessionid" not in response.cookies and "csrftoken" not in response.cookies

    def test_url_names(self):
        assert reverse("api:webhook_mail") == "/api/webhooks/mail"
        assert reverse("api:webhook_teams") == "/api/webhooks/teams"
        assert reverse("api:webhook_lifecycle") == "/api/webhooks/lifecycle"


class TestErrors:
    @pytest.mark.parametrize(
        "body, reason",
        [
            (b"", "empty body"),
            (b"{not json", "not valid JSON"),
            (b"\xff\xfe", "not UTF-8"),
            (b"[1, 2]", "must be a JSON object"),
            (b'{"value": []}', "non-empty array"),
            (b'{"value": "x"}', "non-empty array"),
            (b'{"value": [1]}', "value[0] is not an object"),
            (b'{"value": [{"clientState": "x"}]}', "subscriptionId"),
            (b'{"value": [{"subscriptionId": "a", "resource": "r"}]}', "changeType"),
            (b'{"value": [{"subscriptionId": "a", "changeType": "created"}]}', "names no resource"),
            (b"[" * 100_000, "not valid JSON"),
        ],
    )
    def test_malformed_bodies_get_400_with_a_reason(self, client, body, reason):
        response = client.post("/api/webhooks/mail", data=body, content_type="application/json")
        assert response.status_code == 400
        assert reason in response.content.decode()
        assert not NotificationInbox.objects.exists()

    def test_a_body_over_the_cap_gets_413_before_parsing(self, client, settings):
        settings.WEBHOOK_MAX_BODY_BYTES = 1000
        response = client.post(
            "/api/webhooks/mail", data=b"x" * 1001, content_type="application/json"
        )
        assert response.status_code == 413

    def test_other_methods_get_405(self, client):
        assert client.put("/api/webhooks/mail").status_code == 405
        assert client.get("/api/webhooks/mail").status_code == 400


class TestNotifications:
    def test_valid_items_become_pending_inbox_rows_and_nothing_else(self, client, monitored):
        sub = make_sub(monitored, graph_id="sub-1", client_state="right")
        body = {"value": [notification("sub-1", "right", message_id=f"m{i}") for i in range(3)]}
        response = post_json(client, "/api/webhooks/mail", body)
        assert response.status_code == 202
        rows = list(NotificationInbox.objects.all())
        assert len(rows) == 3 and {r.subscription_id for r in rows} == {sub.pk}
        assert {r.monitored_user_id for r in rows} == {monitored.pk}
        assert {(r.kind, r.status, r.sync_job_id) for r in rows} == {("messages", "pending", None)}
        assert len({r.batch for r in rows}) == 1
        assert {r.resource_id for r in rows} == {"m0", "m1", "m2"}
        assert {r.etag for r in rows} == {'W/"1"'} and rows[0].change_type == "created"
        # The inbox is the queue: no job and no broker row per request.
        assert not Job.objects.exists() and not OrmQ.objects.exists()

    def test_a_request_is_one_statement_once_its_subscription_is_known(self, client, monitored):
        make_sub(monitored, graph_id="sub-1", client_state="right")
        first = {"value": [notification("sub-1", "right", message_id="m0")]}
        assert post_json(client, "/api/webhooks/mail", first).status_code == 202
        body = {"value": [notification("sub-1", "right", message_id=f"m{i}") for i in range(10)]}
        with CaptureQueriesContext(connection) as queries:
            assert post_json(client, "/api/webhooks/mail", body).status_code == 202
        statements = [q["sql"] for q in queries]
        # The multi-row INSERT, in autocommit; on PostgreSQL then the drains' wake-up, a NOTIFY
        # of its own after the commit (in the INSERT's transaction it would hold PostgreSQL's
        # notify lock through the fsync).
        assert (
            statements[0].startswith("INSERT INTO")
            and "microsoft_notificationinbox" in (statements[0])
        )
        if connection.vendor == "postgresql":
            assert len(statements) == 2 and "pg_notify" in statements[1]
        else:
            assert len(statements) == 1
        assert NotificationInbox.objects.count() == 10

    def test_a_recreated_subscription_is_not_served_from_the_cache(self, client, monitored):
        old = make_sub(monitored, graph_id="sub-1", client_state="first")
        assert (
            post_json(
                client, "/api/webhooks/mail", {"value": [notification("sub-1", "first")]}
            ).status_code
            == 202
        )
        old.delete()
        new = make_sub(monitored, graph_id="sub-1", client_state="second")
        body = {
            "value": [
                notification("sub-1", "first", message_id="stale"),
                notification("sub-1", "second", message_id="fresh"),
            ]
        }
        assert post_json(client, "/api/webhooks/mail", body).status_code == 202
        fresh = NotificationInbox.objects.get(resource_id="fresh")
        assert fresh.subscription_id == new.pk
        assert not NotificationInbox.objects.filter(resource_id="stale").exists()
        assert WebhookRejection.objects.get().reason == "client_state_mismatch"

    def test_a_deleted_subscription_known_to_another_process_stores_nothing(
        self, client, monitored
    ):
        sub = make_sub(monitored, graph_id="sub-1", client_state="right")
        item = notification("sub-1", "right")
        assert post_json(client, "/api/webhooks/mail", {"value": [item]}).status_code == 202
        # Deleted where this process's signal does not see it (another process, raw SQL):
        # the cached clientState still matches, the INSERT's join finds no subscription.
        NotificationInbox.objects.all().delete()
        Subscription.objects.filter(pk=sub.pk)._raw_delete(Subscription.objects.db)
        assert post_json(client, "/api/webhooks/mail", {"value": [item]}).status_code == 202
        assert not NotificationInbox.objects.exists()

    def test_duplicates_are_absorbed(self, client, monitored):
        make_sub(monitored, graph_id="sub-1", client_state="right")
        item = notification("sub-1", "right")
        assert post_json(client, "/api/webhooks/mail", {"value": [item, item]}).status_code == 202
        assert post_json(client, "/api/webhooks/mail", {"value": [item]}).status_code == 202
        assert NotificationInbox.objects.count() == 1

    def test_a_wrong_client_state_is_refused_counted_and_logged(self, client, monitored, caplog):
        make_sub(monitored, graph_id="sub-1", client_state="right")
        body = {
            "value": [
                notification("sub-1", "wrong"),
                notification("nope", "right"),
                notification("sub-1", "right", message_id="ok"),
            ]
        }
        with caplog.at_level(logging.WARNING):
            response = post_json(client, "/api/webhooks/mail", body)
        assert response.status_code == 202
        assert list(NotificationInbox.objects.values_list("resource_id", flat=True)) == ["ok"]
        counters = {r.reason: r.count for r in WebhookRejection.objects.all()}
        assert counters == {"client_state_mismatch": 1, "unknown_subscription": 1}
        messages = [r.getMessage() for r in caplog.records if "Webhook" in r.getMessage()]
        assert len(messages) == 1  # one line per request, with the counts
        assert "client_state_mismatch: 1" in messages[0]
        assert "unknown_subscription: 1" in messages[0]
        assert all("wrong" not in m and "right" not in m for m in messages)  # no secrets

    def test_a_thousand_refused_items_log_one_line_with_the_counts(self, client, monitored, caplog):
        items = [notification("nope", "guess", message_id=f"m{n}") for n in range(1000)]
        with caplog.at_level(logging.WARNING):
            response = post_json(client, "/api/webhooks/mail", {"value": items})
        assert response.status_code == 202
        assert WebhookRejection.objects.get().count == 1000
        messages = [r.getMessage() for r in caplog.records if "Webhook" in r.getMessage()]
        assert len(messages) == 1, messages[:3]
        assert "1000 of 1000" in messages[0] and "unknown_subscription: 1000" in messages[0]
        assert "'nope'" in messages[0] and "guess" not in messages[0]

    def test_a_subscription_still_being_created_gets_503_so_graph_redelivers(
        self, client, monitored
    ):
        # Found by bench/soak: Graph may notify for a new subscription before its create call
        # has returned and the portal has stored the id; a 202 with the notification dropped
        # as unknown lost it. The clientState proves it is ours: answer 503, Graph retries.
        creating = make_sub(monitored, graph_id=None, client_state="fresh")
        Subscription.objects.filter(pk=creating.pk).update(state=Subscription.State.CREATING)
        item = notification("sub-new", "fresh")
        response = post_json(client, "/api/webhooks/mail", {"value": [item]})
        assert response.status_code == 503 and response["Retry-After"]
        assert not NotificationInbox.objects.exists() and not WebhookRejection.objects.exists()

        # Once the create has returned, Graph's redelivery is stored.
        Subscription.objects.filter(pk=creating.pk).update(
            graph_id="sub-new", state=Subscription.State.ACTIVE
        )
        assert post_json(client, "/api/webhooks/mail", {"value": [item]}).status_code == 202
        assert NotificationInbox.objects.get().subscription_id == creating.pk

    def test_an_unknown_subscription_with_a_foreign_client_state_is_still_refused(
        self, client, monitored
    ):
        creating = make_sub(monitored, graph_id=None, client_state="fresh")
        Subscription.objects.filter(pk=creating.pk).update(state=Subscription.State.CREATING)
        response = post_json(client, "/api/webhooks/mail", {"value": [notification("x", "guess")]})
        assert response.status_code == 202
        assert WebhookRejection.objects.get().reason == "unknown_subscription"

    def test_a_row_left_creating_by_a_crash_long_ago_does_not_hold_graph_off(
        self, client, monitored
    ):
        stale = make_sub(monitored, graph_id=None, client_state="fresh")
        Subscription.objects.filter(pk=stale.pk).update(
            state=Subscription.State.CREATING, created_at=timezone.now() - timedelta(minutes=30)
        )
        response = post_json(client, "/api/webhooks/mail", {"value": [notification("y", "fresh")]})
        assert response.status_code == 202
        assert WebhookRejection.objects.get().reason == "unknown_subscription"

    def test_only_rejections_store_no_job(self, client, monitored):
        make_sub(monitored, graph_id="sub-1", client_state="right")
        body = {"value": [notification("sub-1", "wrong"), notification("sub-1", None)]}
        assert post_json(client, "/api/webhooks/mail", body).status_code == 202
        assert not Job.objects.exists() and not NotificationInbox.objects.exists()
        assert WebhookRejection.objects.get().count == 2

    def test_lifecycle_items_become_events_the_drain_gives_a_job(self, client, monitored):
        sub = make_sub(monitored, graph_id="sub-1", client_state="right")
        item = {
            "subscriptionId": "sub-1",
            "clientState": "right",
            "lifecycleEvent": "reauthorizationRequired",
            "subscriptionExpirationDateTime": "2030-01-01T00:00:00.1234567Z",
        }
        assert post_json(client, "/api/webhooks/lifecycle", {"value": [item]}).status_code == 202
        assert post_json(client, "/api/webhooks/lifecycle", {"value": [item]}).status_code == 202
        event = LifecycleEvent.objects.get()
        assert event.subscription == sub and event.event == "reauthorizationRequired"
        assert event.subscription_expiration.year == 2030 and event.job is None
        assert not Job.objects.exists()
        assert inbox.drain_once().lifecycle == 1
        event.refresh_from_db()
        assert event.job.job_type == "graph.lifecycle_event"
        assert event.job.payload == {"event": event.pk}
        assert inbox.drain_once().lifecycle == 0  # taken once
        assert Job.objects.count() == 1

    def test_lifecycle_and_change_notifications_in_one_request(self, client, monitored):
        make_sub(monitored, graph_id="sub-1", client_state="right")
        lifecycle = {
            "subscriptionId": "sub-1",
            "clientState": "right",
            "lifecycleEvent": "missed",
        }
        body = {"value": [lifecycle, notification("sub-1", "right"), notification("x", "y")]}
        assert post_json(client, "/api/webhooks/mail", body).status_code == 202
        assert LifecycleEvent.objects.get().subscription_expiration is None
        assert NotificationInbox.objects.count() == 1
        assert WebhookRejection.objects.get().count == 1

    def test_database_down_gives_503_and_stores_nothing(self, client, monitored):
        make_sub(monitored, graph_id="sub-1", client_state="right")
        body = {"value": [notification("sub-1", "right")]}
        with mock.patch.object(
            notifications,
            "_insert_notifications",
            side_effect=OperationalError("database is down"),
        ):
            response = post_json(client, "/api/webhooks/mail", body)
        assert response.status_code == 503
        assert response["Retry-After"]
        assert not NotificationInbox.objects.exists()

    def test_a_failure_after_the_first_statement_rolls_the_request_back(self, client, monitored):
        make_sub(monitored, graph_id="sub-1", client_state="right")
        body = {"value": [notification("sub-1", "right"), notification("sub-1", "wrong")]}
        with mock.patch.object(
            notifications, "_count_rejection", side_effect=OperationalError("gone")
        ):
            assert post_json(client, "/api/webhooks/mail", body).status_code == 503
        assert not NotificationInbox.objects.exists()  # Graph retries the whole request

    def test_no_graph_call_happens_in_the_request(self, client, monitored):
        make_sub(monitored, graph_id="sub-1", client_state="right")
        # Graph unreachable: any call would fail the request and leave a GraphCall row.
        with override_settings(MICROSOFT_GRAPH_URL="https://127.0.0.1:9/v1.0"):
            response = post_json(
                client, "/api/webhooks/mail", {"value": [notification("sub-1", "right")]}
            )
        assert response.status_code == 202
        assert not GraphCall.objects.exists()
