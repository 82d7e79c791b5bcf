from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.db import connections
from django.utils import timezone

from integrations import graph
from integrations.graph import auth, error_mapping, routes
from integrations.graph.errors import (
    AuthError,
    Conflict,
    DeltaTokenExpired,
    GraphPermissionDenied,
    GraphValidationError,
    NotFound,
    Throttled,
    Transient,
)
from integrations.microsoft.models import GraphCall
from tests.integrations.graph.conftest import token_requests


class TestRouteTemplate:
    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            ("/users/79c8-ab/messages/delta", "/users/{id}/messages/delta"),
            (
                "/users/a@b.com/mailFolders/inbox/messages/delta?$select=subject",
                "/users/{id}/mailFolders/{id}/messages/delta",
            ),
            (
                "https://graph.example/v1.0/users/x/chats/getAllMessages/delta?$skiptoken=abc",
                "/users/{id}/chats/getAllMessages/delta",
            ),
            ("/chats/19:abc@thread.v2/messages", "/chats/{id}/messages"),
            (
                "/teams/t1/channels/19:c@thread.tacv2/messages/1612/replies",
                "/teams/{id}/channels/{id}/messages/{id}/replies",
            ),
            ("/subscriptions/8a1f/reauthorize", "/subscriptions/{id}/reauthorize"),
            ("/users('a@b.com')/messages('AAMk=')", "/users({id})/messages({id})"),
            ("/users/u1/sendMail", "/users/{id}/sendMail"),
            ("/$batch", "/$batch"),
            ("/users", "/users"),
        ],
    )
    def test_it_replaces_ids(self, settings, path, expected):
        settings.MICROSOFT_GRAPH_URL = "https://graph.example/v1.0"
        assert routes.route_template(path) == expected

    def test_it_finds_the_mailbox(self, settings):
        settings.MICROSOFT_GRAPH_URL = "https://graph.example/v1.0"
        assert routes.mailbox_of("/users/Ab-12/messages") == "ab-12"
        assert routes.mailbox_of("https://graph.example/v1.0/users/X/messages/delta?a=1") == "x"
        assert routes.mailbox_of("/users('A@B.com')/messages") == "a@b.com"
        assert routes.mailbox_of("/subscriptions") == ""


class TestRetryAfter:
    def test_it_parses_seconds_decimals_and_dates(self):
        assert error_mapping.parse_retry_after("10") == 10
        assert error_mapping.parse_retry_after("2.128") == pytest.approx(2.128)
        assert error_mapping.parse_retry_after("-3") == 0
        when = timezone.now() + timedelta(seconds=30)
        http_date = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
        assert 28 <= error_mapping.parse_retry_after(http_date) <= 31
        assert error_mapping.parse_retry_after("soon") is None
        assert error_mapping.parse_retry_after(None) is None


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("status", "code", "kind", "transient"),
        [
            (400, "BadRequest", GraphValidationError, False),
            (401, "InvalidAuthenticationToken", AuthError, False),
            (403, "ErrorAccessDenied", GraphPermissionDenied, False),
            (404, "ErrorItemNotFound", NotFound, False),
            (409, "Conflict", Conflict, False),
            (410, "SyncStateNotFound", DeltaTokenExpired, False),
            (429, "ApplicationThrottled", Throttled, True),
            (503, "ServiceUnavailable", Transient, True),
            (504, "GatewayTimeout", Transient, True),
        ],
    )
    def test_it_types_errors(self, status, code, kind, transient):
        body = {"error": {"code": code, "message": "m", "innerError": {"request-id": "r1"}}}
        error = error_mapping.error_for(
            status, body, {"Retry-After": "7"}, method="GET", route="/x"
        )
        assert type(error) is kind
        assert error.transient is transient
        assert error.code == code and error.request_id == "r1" and error.retry_after == 7

    def test_it_refuses_to_send_the_token_to_another_host(self, settings):
        settings.MICROSOFT_GRAPH_URL = "https://graph.example/v1.0"
        with pytest.raises(ValueError, match="not the Graph host"):
            graph.request("GET", "https://evil.example/v1.0/users")


@pytest.mark.django_db
class TestAgainstEmulator:
    def test_it_gets_records_and_logs(self, graph_settings, emulator, mailbox, caplog):
        caplog.set_level(logging.INFO, logger="integrations.microsoft.graph")
        body = graph.get(f"/users/{mailbox}/mailFolders/inbox/messages", params={"$top": "2"})
        assert len(body["value"]) == 2
        call = GraphCall.objects.get()
        assert call.route == "/users/{id}/mailFolders/{id}/messages"
        assert (call.method, call.status, call.mailbox) == ("GET", 200, mailbox)
        assert call.request_id and not call.throttled
        line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Graph"))
        assert line.startswith("Graph API GET /users/{id}/mailFolders/{id}/messages 200 ")
        assert call.request_id in line

    def test_a_429_blocks_the_mailbox_until_retry_after(self, graph_settings, emulator, mailbox):
        emulator.control.inject_fault(
            path=f"/users/{mailbox}/messages", kind="429", retry_after=2, count=1
        )
        started = time.monotonic()
        graph.get(f"/users/{mailbox}/messages", params={"$top": "1"})
        assert time.monotonic() - started >= 2
        log = emulator.control.requests_log(path=f"/users/{mailbox}/")
        assert [e["status"] for e in log] == [429, 200]
        # From the emulator's own clock: the retry arrived after Retry-After had passed.
        assert log[1]["monotonic"] - log[0]["monotonic"] >= 2
        calls = list(
            GraphCall.objects.order_by("id").values_list("status", "throttled", "retry_after")
        )
        assert calls == [(429, True, 2.0), (200, False, None)]

    def test_other_requests_for_a_throttled_mailbox_wait_too(
        self, graph_settings, emulator, mailbox, gate_clock
    ):
        graph_settings.GRAPH_MAX_IN_PROCESS_WAIT_SECONDS = 1
        emulator.control.inject_fault(
            path=f"/users/{mailbox}/messages", kind="429", retry_after=3, count=1
        )
        with pytest.raises(Throttled) as first:
            graph.get(f"/users/{mailbox}/messages")
        assert first.value.retry_after == pytest.approx(3, abs=0.2)
        # A different route of the same mailbox is not sent while the window lasts...
        with pytest.raises(Throttled) as second:
            graph.get(f"/users/{mailbox}/mailFolders")
        assert 0 < second.value.retry_after <= 3
        log = emulator.control.requests_log(path=f"/users/{mailbox}")
        assert len(log) == 1
        # ...while other mailboxes are unaffected.
        other = emulator.control.tenant()["users"][1]["id"]
        graph.get(f"/users/{other}/mailFolders")
        # Once the window has passed (both clocks moved, not waited: the gates' monotonic one
        # and the shared windows' wall clock), the mailbox is called again.
        with time_machine.travel(timezone.now() + timedelta(seconds=3.5), tick=True):
            gate_clock.advance(3.5)
            graph.get(f"/users/{mailbox}/mailFolders")
        log = emulator.control.requests_log(path=f"/users/{mailbox}")
        assert [e["status"] for e in log] == [429, 200]

    def test_503_backs_off_then_succeeds(self, graph_settings, emulator):
        emulator.control.inject_fault(path="/v1.0/users$", kind="503", count=2)
        body = graph.get("/users", params={"$top": "1"})
        assert body["value"]
        statuses = [e["status"] for e in emulator.control.requests_log(path="/v1.0/users$")]
        assert statuses == [503, 503, 200]

    def test_persistent_503_raises_transient_after_the_retries(self, graph_settings, emulator):
        graph_settings.GRAPH_MAX_RETRIES = 2
        emulator.control.inject_fault(path="/v1.0/users$", kind="503")
        with pytest.raises(Transient) as caught:
            graph.get("/users")
        assert caught.value.status == 503 and caught.value.retry_after is not None
        assert len(emulator.control.requests_log(path="/v1.0/users$")) == 3

    def test_a_long_retry_after_goes_to_the_job_layer(self, graph_settings, emulator):
        emulator.control.inject_fault(path="/v1.0/subscriptions", kind="429", retry_after=120)
        with (
            mock.patch.object(time, "sleep", wraps=time.sleep) as slept,
            pytest.raises(Throttled) as caught,
        ):
            graph.get("/subscriptions")
        # Handed back at once: no in-process wait anywhere near the two minutes asked for.
        limit = graph_settings.GRAPH_MAX_IN_PROCESS_WAIT_SECONDS
        assert all(call.args[0] <= limit for call in slept.call_args_list)
        assert caught.value.retry_after == 120 and caught.value.transient
        # Nothing was sent again inside the window (no mailbox gate covers this route).
        assert len(emulator.control.requests_log(path="/v1.0/subscriptions")) == 1

    def test_a_read_timeout_is_transient(self, graph_settings, emulator):
        graph_settings.GRAPH_READ_TIMEOUT = 0.5
        emulator.control.inject_fault(path="/v1.0/users$", kind="latency", latency_ms=1500)
        with pytest.raises(Transient, match="read timeout"):
            graph.request("GET", "/users", max_retries=0)
        call = GraphCall.objects.get()
        assert call.status is None and call.error_code == "ReadTimeout"

    def test_a_connection_reset_is_transient_and_retried_for_get(self, graph_settings, emulator):
        emulator.control.inject_fault(path="/v1.0/users$", kind="reset", count=1)
        assert graph.get("/users")["value"]
        emulator.control.inject_fault(path="/v1.0/users$", kind="reset")
        with pytest.raises(Transient) as caught:
            graph.request("GET", "/users", max_retries=0)
        assert caught.value.code in {"ConnectionError", "ChunkedEncodingError"}

    def test_a_post_is_not_repeated_after_a_reset(self, graph_settings, emulator, mailbox):
        emulator.control.inject_fault(path="/sendMail", kind="reset", count=1)
        with pytest.raises(Transient):
            graph.post(
                f"/users/{mailbox}/sendMail",
                {
                    "message": {
                        "subject": "x",
                        "body": {"contentType": "Text", "content": "y"},
                        "toRecipients": [{"emailAddress": {"address": "a@example.com"}}],
                    }
                },
            )
        assert len(emulator.control.requests_log(path="/sendMail")) == 1

    def test_an_unreachable_graph_is_transient(self, graph_settings):
        graph_settings.MICROSOFT_GRAPH_URL = "https://127.0.0.1:9/v1.0"
        graph_settings.GRAPH_MAX_RETRIES = 0

        auth.app_token()  # the identity side still works
        with pytest.raises(Transient, match="Could not connect"):
            graph.get("/users")

    def test_a_401_drops_the_token_and_retries_once(self, graph_settings, emulator):
        graph.get("/users")
        before = len(token_requests(emulator))
        emulator.control.inject_fault(
            path="/v1.0/users$",
            kind="status",
            status=401,
            count=1,
            body={
                "error": {
                    "code": "InvalidAuthenticationToken",
                    "message": "Access token has expired.",
                }
            },
        )
        assert graph.get("/users")["value"]
        assert len(token_requests(emulator)) == before + 1
        emulator.control.inject_fault(
            path="/v1.0/users$",
            kind="status",
            status=401,
            count=2,
            body={
                "error": {
                    "code": "InvalidAuthenticationToken",
                    "message": "Access token has expired.",
                }
            },
        )
        with pytest.raises(AuthError):
            graph.get("/users")

    def test_it_follows_next_links_and_returns_the_delta_link(
        self, graph_settings, emulator, mailbox
    ):
        pages = graph.iter_pages(
            f"/users/{mailbox}/mailFolders/inbox/messages/delta",
            headers={"Prefer": "odata.maxpagesize=3"},
        )
        ids = [item["id"] for page in pages for item in page["value"]]
        assert pages.pages >= 2 and len(ids) == len(set(ids)) >= 4
        assert pages.delta_link and "deltatoken" in pages.delta_link.lower()
        routes = set(GraphCall.objects.values_list("route", flat=True))
        assert routes == {"/users/{id}/mailFolders/{id}/messages/delta"}
        # Next round from the stored link: new mail shows up.
        emulator.control.create_mail(to=mailbox, subject="Tyre pressure alert")
        again = graph.iter_pages(pages.delta_link)
        subjects = [i.get("subject") for i in again.items()]
        assert "Tyre pressure alert" in subjects and again.delta_link

    def test_an_expired_delta_token_raises_delta_token_expired(
        self, graph_settings, emulator, mailbox
    ):
        pages = graph.iter_pages(f"/users/{mailbox}/mailFolders/inbox/messages/delta")
        list(pages)
        emulator.control.expire_delta_tokens(mailbox)
        with pytest.raises(DeltaTokenExpired):
            list(graph.iter_pages(pages.delta_link))

    def test_batch_splits_and_maps_inner_results(self, graph_settings, emulator):
        users = [u["id"] for u in emulator.control.tenant()["users"]][:21]
        items = [{"method": "GET", "url": f"/users/{u}"} for u in users]
        items.append({"method": "GET", "url": "/users/00000000-0000-0000-0000-000000000000"})
        results = graph.batch(items)
        assert [r.status for r in results] == [200] * 21 + [404]
        assert results[0].body["id"] == users[0]
        assert isinstance(results[-1].error, NotFound)
        assert len(emulator.control.requests_log(path=r"/\$batch$")) == 2
        assert GraphCall.objects.filter(in_batch=True).count() == 22
        assert GraphCall.objects.filter(route="/$batch").count() == 2

    def test_batch_retries_throttled_inner_requests(self, graph_settings, emulator, mailbox):
        emulator.control.inject_fault(
            path=f"/users/{mailbox}/mailFolders", kind="429", retry_after=1, count=1
        )
        results = graph.batch(
            [
                {"id": "a", "method": "GET", "url": f"/users/{mailbox}/mailFolders"},
                {"id": "b", "method": "GET", "url": "/users?$top=1"},
            ]
        )
        assert [r.status for r in results] == [200, 200]
        batches = emulator.control.requests_log(path=r"/\$batch$")
        assert len(batches) == 2
        assert batches[1]["monotonic"] - batches[0]["monotonic"] >= 1

    def test_local_budget_stops_before_graph_would_throttle(
        self, graph_settings, emulator, mailbox
    ):
        graph_settings.GRAPH_MAILBOX_BUDGET_PER_10_MIN = 3
        graph_settings.GRAPH_MAX_IN_PROCESS_WAIT_SECONDS = 1
        for _ in range(3):
            graph.get(f"/users/{mailbox}/mailFolders")
        with pytest.raises(Throttled) as caught:
            graph.get(f"/users/{mailbox}/mailFolders")
        assert caught.value.code == "LocalThrottle" and caught.value.retry_after > 100
        assert len(emulator.control.requests_log(path=f"/users/{mailbox}/")) == 3


@pytest.mark.django_db(transaction=True)
def test_no_more_than_the_limit_in_flight_per_mailbox(graph_settings, emulator, mailbox):
    graph_settings.GRAPH_MAX_IN_FLIGHT_PER_MAILBOX = 2
    emulator.control.inject_fault(
        path=f"/users/{mailbox}/mailFolders", kind="latency", latency_ms=300
    )
    errors: list[BaseException] = []

    def call() -> None:
        try:
            graph.get(f"/users/{mailbox}/mailFolders")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()  # this thread's connection (PostgreSQL teardown)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    log = emulator.control.requests_log(path=f"/users/{mailbox}/mailFolders")
    assert [e["status"] for e in log] == [200] * 6, log
    # The emulator's spans sit inside our semaphore-held spans, so this is exact.
    spans = [(e["monotonic"], e["monotonic"] + e["duration_ms"] / 1000) for e in log]
    peak = max(sum(1 for s, f in spans if s <= t < f) for t, _ in spans)
    assert peak <= 2, spans
