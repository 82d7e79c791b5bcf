"""Throttling (mailbox budget + concurrency), fault injection, control API access."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .conftest import HANNAH, MARIA, Graph


def test_mailbox_request_budget(graph):
    graph.emu.control.configure(throttling={"mailbox_requests": 5, "mailbox_window_s": 3})
    codes = [graph.get(f"users/{MARIA}/messages", params={"$top": "1"}) for _ in range(6)]
    assert [c.status_code for c in codes[:5]] == [200] * 5
    r = codes[5]
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "ApplicationThrottled"
    assert r.headers["Retry-After"].isdigit() and 1 <= int(r.headers["Retry-After"]) <= 3
    # other mailboxes are not affected
    assert graph.get(f"users/{HANNAH}/messages").status_code == 200
    log = graph.emu.control.requests_log(path="/messages")
    assert [e["throttled"] for e in log][-2:] == [True, False]
    assert log[-2]["mailbox"] and log[-2]["app_id"] == graph.emu.client_id


def test_mailbox_concurrency_limit(graph):
    graph.emu.control.inject_fault(path=f"/users/{MARIA}/messages$", kind="latency", latency_ms=800)
    sessions = [Graph(graph.emu, token=graph.token) for _ in range(5)]

    def call(g):
        return g.get(f"users/{MARIA}/messages", params={"$top": "1"})

    with ThreadPoolExecutor(5) as pool:
        futures = []
        for g in sessions:
            futures.append(pool.submit(call, g))
            time.sleep(0.05)
        results = [f.result() for f in futures]
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 200, 200, 200, 429]
    throttled = next(r for r in results if r.status_code == 429)
    assert throttled.json()["error"]["message"] == (
        "Application is over its MailboxConcurrency limit."
    )
    assert throttled.headers["Retry-After"].isdigit()


@pytest.mark.parametrize("status", [429, 503, 504])
def test_status_faults(graph, status):
    graph.emu.control.inject_fault(
        path="/v1.0/users$", method="GET", kind=str(status), retry_after=3, count=2
    )
    r1, r2, r3 = (graph.get("users") for _ in range(3))
    assert r1.status_code == r2.status_code == status
    assert r1.headers["Retry-After"] == "3"
    assert r1.json()["error"]["code"] in ("TooManyRequests", "ServiceUnavailable", "GatewayTimeout")
    assert "request-id" in r1.headers
    assert r3.status_code == 200


def test_latency_fault(graph):
    graph.emu.control.inject_fault(glob="/v1.0/users/*", kind="latency", latency_ms=400, count=1)
    t0 = time.monotonic()
    assert graph.get(f"users/{MARIA}").status_code == 200
    assert time.monotonic() - t0 >= 0.38


def test_connection_reset_fault(graph):
    graph.emu.control.inject_fault(path="/v1.0/users$", kind="reset", count=1)
    with pytest.raises(requests.ConnectionError):
        graph.get("users")
    assert graph.get("users").status_code == 200


def _send(graph, subject: str) -> requests.Response:
    return graph.post(
        f"users/{MARIA}/sendMail",
        {
            "message": {
                "subject": subject,
                "body": {"contentType": "Text", "content": "x"},
                "toRecipients": [{"emailAddress": {"address": "a@example.com"}}],
            }
        },
    )


def _sent(graph, subject: str) -> int:
    return sum(m["subject"] == subject for m in graph.emu.control.sent_messages(kind="mail"))


def test_a_performed_fault_acts_then_answers_429(graph):
    graph.emu.control.inject_fault(
        path="/sendMail$", method="POST", kind="429", retry_after=2, perform=True, count=1
    )
    r = _send(graph, "Acted on")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert _sent(graph, "Acted on") == 1  # Graph did send it
    # Without `perform` a 429 means nothing happened.
    graph.emu.control.inject_fault(path="/sendMail$", method="POST", kind="429", count=1)
    assert _send(graph, "Refused").status_code == 429
    assert _sent(graph, "Refused") == 0


def test_a_performed_fault_acts_then_answers_too_late_or_resets(graph):
    graph.emu.control.inject_fault(
        path="/sendMail$", method="POST", kind="latency", latency_ms=1500, perform=True, count=1
    )
    with pytest.raises(requests.ReadTimeout):
        graph.s.post(
            graph.url(f"users/{MARIA}/sendMail"),
            json={
                "message": {
                    "subject": "Too late",
                    "body": {"contentType": "Text", "content": "x"},
                    "toRecipients": [{"emailAddress": {"address": "a@example.com"}}],
                }
            },
            timeout=(5, 0.5),
        )
    assert _sent(graph, "Too late") == 1
    graph.emu.control.inject_fault(
        path="/sendMail$", method="POST", kind="reset", perform=True, count=1
    )
    with pytest.raises(requests.ConnectionError):
        _send(graph, "Reset")
    assert _sent(graph, "Reset") == 1


def test_probability_and_clear(graph):
    ctl = graph.emu.control
    ctl.inject_fault(path="/v1.0/users$", kind="503", probability=0.0)
    assert graph.get("users").status_code == 200
    ctl.inject_fault(path="/v1.0/users$", kind="503")
    assert graph.get("users").status_code == 503
    ctl.clear_faults()
    assert graph.get("users").status_code == 200


def test_control_api_requires_token(emulator):
    s = emulator.session()
    base = f"{emulator.base_url}/_emulator"
    assert s.get(f"{base}/health").status_code == 401
    assert s.get(f"{base}/health", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert s.post(f"{base}/reset").status_code == 401
    ok = s.get(f"{base}/health", headers={"Authorization": f"Bearer {emulator.control_token}"})
    assert ok.status_code == 200 and ok.json()["status"] == "ok"


def test_request_log_filters(graph):
    ctl = graph.emu.control
    start = ctl.requests_log()[-1]["seq"]
    graph.get(f"users/{MARIA}")
    entries = ctl.requests_log(since=start)
    assert entries and all(e["seq"] > start for e in entries)
    e = entries[-1]
    assert e["method"] == "GET" and e["status"] == 200
    assert {"monotonic", "wall", "path", "app_id", "throttled"} <= set(e)


def test_snapshot_and_reset(graph):
    ctl = graph.emu.control
    ctl.create_mail(MARIA, subject="temporary")
    snap = ctl.snapshot()
    assert len(snap["users"]) >= 21
    ctl.reset()
    assert (
        graph.get(f"users/{MARIA}/messages", params={"$filter": "subject eq 'temporary'"}).json()[
            "value"
        ]
        == []
    )
