"""The three pieces of graph.request's one retry loop, each on its own: `send` (one
exchange), `classify` (what to do about it) and `next_delay` (how long to wait)."""

from __future__ import annotations

import pytest

from integrations import graph
from integrations.graph import exchange, retry_policy, routes
from integrations.graph.errors import (
    AuthError,
    GraphValidationError,
    NotFound,
    Throttled,
    Transient,
)
from integrations.microsoft.models import GraphCall

DONE, REFRESH, RETRY, FAIL = (
    retry_policy.Verdict.DONE,
    retry_policy.Verdict.REFRESH_TOKEN,
    retry_policy.Verdict.RETRY,
    retry_policy.Verdict.FAIL,
)


class TestClassify:
    def test_a_response_is_done(self):
        response = graph.GraphResponse(200, {}, {"value": []})
        assert retry_policy.classify(response, repeatable=False, token_refreshed=False) is DONE

    def test_a_rejected_token_is_refreshed_once(self):
        expired = AuthError("expired", status=401, code="InvalidAuthenticationToken")
        assert retry_policy.classify(expired, repeatable=False, token_refreshed=False) is REFRESH
        assert retry_policy.classify(expired, repeatable=False, token_refreshed=True) is FAIL
        other = AuthError("nope", status=401, code="SomethingElse")
        assert retry_policy.classify(other, repeatable=True, token_refreshed=False) is FAIL

    @pytest.mark.parametrize(
        "error",
        [
            GraphValidationError("bad", status=400),
            NotFound("gone", status=404),
        ],
    )
    def test_a_refusal_fails_even_when_repeatable(self, error):
        assert not error.may_have_acted
        assert retry_policy.classify(error, repeatable=True, token_refreshed=False) is FAIL

    @pytest.mark.parametrize(
        "error",
        [
            Throttled("slow down", status=429, retry_after=2),
            Transient("unavailable", status=503),
            Transient("no answer in time", code="ReadTimeout"),
        ],
    )
    def test_an_answer_graph_may_have_acted_on_is_retried_only_when_repeatable(self, error):
        assert error.may_have_acted
        assert retry_policy.classify(error, repeatable=True, token_refreshed=False) is RETRY
        assert retry_policy.classify(error, repeatable=False, token_refreshed=False) is FAIL

    def test_what_never_reached_graph_is_retried_even_when_not_repeatable(self):
        not_sent = Transient("connect timeout", code="ConnectTimeout", may_have_acted=False)
        assert retry_policy.classify(not_sent, repeatable=False, token_refreshed=False) is RETRY


class TestNextDelay:
    def test_retry_after_wins(self):
        error = Throttled("slow down", status=429, retry_after=7)
        assert retry_policy.next_delay(error, attempt=3, retries_left=1) == 7

    def test_otherwise_full_jitter_backoff_capped(self, settings):
        settings.GRAPH_BACKOFF_BASE_SECONDS = 1.0
        settings.GRAPH_BACKOFF_MAX_SECONDS = 5.0
        error = Transient("unavailable", status=503)
        delays = [
            retry_policy.next_delay(error, attempt=attempt, retries_left=1) for attempt in range(8)
        ]
        assert all(d is not None and 0 <= d <= 5.0 for d in delays)
        assert all(d is not None and d <= 2**attempt for attempt, d in enumerate(delays[:2]))

    def test_no_retry_left_means_no_delay(self):
        error = Throttled("slow down", status=429, retry_after=1)
        assert retry_policy.next_delay(error, attempt=0, retries_left=0) is None


@pytest.mark.django_db
class TestSend:
    """One exchange with the emulator over HTTPS: answered, never raised; one row each."""

    def _send(self, emulator, path: str, method: str = "GET", **kwargs):
        return exchange.send(
            method,
            f"{emulator.graph_url}{path}",
            route=routes.route_template(path),
            mailbox="",
            token=emulator.token(),
            timeout=(5, 10),
            **kwargs,
        )

    def test_a_success_is_a_response(self, graph_settings, emulator):
        result = self._send(emulator, "/users", params={"$top": "1"})
        assert isinstance(result, graph.GraphResponse) and result.body["value"]
        assert list(GraphCall.objects.values_list("status", "route")) == [(200, "/users")]

    def test_an_error_answer_is_returned_typed(self, graph_settings, emulator):
        emulator.control.inject_fault(path="/v1.0/users$", kind="429", retry_after=4, count=1)
        result = self._send(emulator, "/users")
        assert isinstance(result, Throttled) and result.retry_after == 4
        assert result.may_have_acted
        assert len(emulator.control.requests_log(path="/v1.0/users$")) == 1  # no retry here
        assert list(GraphCall.objects.values_list("status", "throttled")) == [(429, True)]

    def test_a_transport_failure_is_returned_with_what_graph_may_know(
        self, graph_settings, emulator
    ):
        emulator.control.inject_fault(path="/v1.0/users$", kind="reset", count=1)
        reset = self._send(emulator, "/users")
        assert isinstance(reset, Transient) and reset.may_have_acted
        refused = exchange.send(
            "POST",
            "https://127.0.0.1:9/v1.0/users",
            route="/users",
            mailbox="",
            token="x",
            timeout=(2, 2),
        )
        assert isinstance(refused, Transient) and refused.code == "ConnectionError"
        assert GraphCall.objects.filter(status__isnull=True).count() == 2
