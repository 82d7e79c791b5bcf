"""JSON batching: ≤ 20 requests, inner statuses, dependsOn → 424."""

from __future__ import annotations

from .conftest import HANNAH, MARIA


def test_batch_inner_statuses(graph):
    r = graph.post(
        "$batch",
        {
            "requests": [
                {"id": "1", "method": "GET", "url": f"/users/{MARIA}"},
                {"id": "2", "method": "GET", "url": "/users/ghost@fleetdemo.onmicrosoft.com"},
                {
                    "id": "3",
                    "method": "POST",
                    "url": f"/users/{MARIA}/sendMail",
                    "headers": {"Content-Type": "application/json"},
                    "body": {
                        "message": {
                            "subject": "Batch mail",
                            "toRecipients": [{"emailAddress": {"address": HANNAH}}],
                        }
                    },
                },
            ]
        },
    )
    assert r.status_code == 200
    res = {x["id"]: x for x in r.json()["responses"]}
    assert res["1"]["status"] == 200 and res["1"]["body"]["userPrincipalName"] == MARIA
    assert res["2"]["status"] == 404
    assert res["2"]["body"]["error"]["code"] == "Request_ResourceNotFound"
    assert res["3"]["status"] == 202
    assert len(graph.emu.control.sent_messages(kind="mail")) == 1


def test_batch_depends_on_failed_dependency_424(graph):
    r = graph.post(
        "$batch",
        {
            "requests": [
                {"id": "a", "method": "GET", "url": "/users/ghost@fleetdemo.onmicrosoft.com"},
                {"id": "b", "method": "GET", "url": f"/users/{MARIA}", "dependsOn": ["a"]},
                {"id": "c", "method": "GET", "url": f"/users/{MARIA}"},
                {"id": "d", "method": "GET", "url": f"/users/{HANNAH}", "dependsOn": ["c"]},
            ]
        },
    )
    res = {x["id"]: x["status"] for x in r.json()["responses"]}
    assert res == {"a": 404, "b": 424, "c": 200, "d": 200}


def test_batch_limits_and_inner_throttling(graph):
    too_many = [{"id": str(i), "method": "GET", "url": "/users"} for i in range(21)]
    r = graph.post("$batch", {"requests": too_many})
    assert r.status_code == 400
    graph.emu.control.inject_fault(path=r"/v1\.0/users/.*/messages$", kind="429", retry_after=7)
    r = graph.post(
        "$batch",
        {
            "requests": [
                {"id": "1", "method": "GET", "url": f"/users/{MARIA}/messages"},
                {"id": "2", "method": "GET", "url": f"/users/{MARIA}"},
            ]
        },
    )
    assert r.status_code == 200
    res = {x["id"]: x for x in r.json()["responses"]}
    assert res["1"]["status"] == 429 and res["1"]["headers"]["Retry-After"] == "7"
    assert res["2"]["status"] == 200
