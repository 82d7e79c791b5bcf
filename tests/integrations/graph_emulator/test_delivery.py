"""Change-notification delivery: batching, retries with backoff, lifecycle events."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

from integrations.graph_emulator.delivery import Pending, UrlQueue

from .conftest import HANNAH, MARIA


def _exp(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mail_sub(graph, receiver, lifecycle=True):
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": receiver.url,
        "resource": f"users/{graph.user_id(MARIA)}/mailFolders('inbox')/messages",
        "expirationDateTime": _exp(3000),
        "clientState": "cs-123",
    }
    if lifecycle:
        body["lifecycleNotificationUrl"] = receiver.lifecycle_url
    r = graph.post("subscriptions", body)
    assert r.status_code == 201, r.text
    return r.json()


def test_notifications_are_batched_and_shaped(graph, receiver):
    graph.emu.control.configure(delivery={"batch_delay_s": 0.3})
    sub = _mail_sub(graph, receiver)
    ids = [graph.emu.control.create_mail(MARIA, subject=f"Tyre check {i}")["id"] for i in range(3)]
    items = receiver.wait_for(lambda: len(receiver.items()) >= 3 and receiver.items())
    assert len([p for p in receiver.posts if p["path"] == "/notify"]) == 1  # one batch
    n = items[0]
    assert n["subscriptionId"] == sub["id"]
    assert n["clientState"] == "cs-123"
    assert n["tenantId"] == graph.emu.tenant_id
    assert n["changeType"] == "created"
    assert n["subscriptionExpirationDateTime"]
    rd = n["resourceData"]
    assert rd["@odata.type"] == "#Microsoft.Graph.Message"
    assert rd["@odata.id"] == n["resource"]
    assert rd["@odata.etag"].startswith('W/"')
    assert sorted(i["resourceData"]["id"] for i in items) == sorted(ids)


def test_sendmail_and_update_generate_notifications(graph, receiver):
    _mail_sub(graph, receiver)
    graph.post(
        f"users/{HANNAH}/sendMail",
        {
            "message": {
                "subject": "Shift swap",
                "body": {"contentType": "Text", "content": "Friday?"},
                "toRecipients": [{"emailAddress": {"address": MARIA}}],
            }
        },
    )
    first = receiver.wait_for(lambda: receiver.items())
    msg_id = first[0]["resourceData"]["id"]
    graph.patch(f"users/{MARIA}/messages/{msg_id}", {"isRead": True})
    receiver.wait_for(lambda: any(i["changeType"] == "updated" for i in receiver.items()))


def test_retry_with_exponential_backoff(graph, receiver):
    graph.emu.control.configure(delivery={"initial_backoff_s": 0.2, "batch_delay_s": 0.05})
    _mail_sub(graph, receiver)
    receiver.statuses = [500, 503, 500]
    graph.emu.control.create_mail(MARIA, subject="Brake pads delayed")
    receiver.wait_for(lambda: receiver.items(), timeout=10)
    posts = [p for p in receiver.posts if p["path"] == "/notify"]
    assert [p["status"] for p in posts] == [500, 503, 500, 202]
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(posts)]
    assert gaps[0] >= 0.18 and gaps[1] >= 0.38 and gaps[2] >= 0.78
    attempts = [e for e in graph.emu.control.deliveries()["value"] if e["event"] == "attempt"]
    assert [a["ok"] for a in attempts][-4:] == [False, False, False, True]


def test_gives_up_after_retry_window_and_sends_missed(graph, receiver):
    graph.emu.control.configure(
        delivery={"initial_backoff_s": 0.1, "retry_window_s": 0.5, "batch_delay_s": 0.05}
    )
    _mail_sub(graph, receiver)
    receiver.statuses = [500] * 50
    graph.emu.control.create_mail(MARIA, subject="Never delivered")
    receiver.wait_for(
        lambda: any(e["event"] == "gave_up" for e in graph.emu.control.deliveries()["value"])
    )
    receiver.statuses = []
    lifecycle = receiver.wait_for(lambda: receiver.items("/lifecycle"))
    assert lifecycle[0]["lifecycleEvent"] == "missed"


def test_duplicates_when_configured(graph, receiver):
    graph.emu.control.configure(delivery={"duplicate_probability": 1.0, "batch_delay_s": 0.05})
    _mail_sub(graph, receiver)
    graph.emu.control.create_mail(MARIA, subject="dup")
    receiver.wait_for(lambda: len(receiver.items()) >= 2)
    first, second = receiver.items()[:2]
    assert first == second


def test_lifecycle_events(graph, receiver):
    ctl = graph.emu.control
    sub = _mail_sub(graph, receiver)
    ctl.fire_lifecycle(sub["id"], "reauthorizationRequired")
    ev = receiver.wait_for(lambda: receiver.items("/lifecycle"))[0]
    assert ev == {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": ev["subscriptionExpirationDateTime"],
        "tenantId": graph.emu.tenant_id,
        "clientState": "cs-123",
        "lifecycleEvent": "reauthorizationRequired",
    }
    ctl.remove_subscription(sub["id"])
    receiver.wait_for(
        lambda: any(
            i["lifecycleEvent"] == "subscriptionRemoved" for i in receiver.items("/lifecycle")
        )
    )
    assert graph.get(f"subscriptions/{sub['id']}").status_code == 404


def test_reauthorization_required_before_expiry(graph, receiver):
    graph.emu.control.configure(delivery={"reauth_before_s": 3600})
    body = {
        "changeType": "created",
        "notificationUrl": receiver.url,
        "lifecycleNotificationUrl": receiver.lifecycle_url,
        "resource": f"users/{graph.user_id(MARIA)}/messages",
        "expirationDateTime": _exp(120),
        "clientState": "x",
    }
    assert graph.post("subscriptions", body).status_code == 201
    assert not receiver.items("/lifecycle")
    graph.emu.control.advance_clock(61 * 60)
    ev = receiver.wait_for(lambda: receiver.items("/lifecycle"))
    assert ev[0]["lifecycleEvent"] == "reauthorizationRequired"


def test_teams_chat_notifications(graph, receiver):
    tenant = graph.emu.control.tenant()
    chat = next(c for c in tenant["chats"] if c["topic"] == "Dispatch desk")
    body = {
        "changeType": "created",
        "notificationUrl": receiver.url,
        "lifecycleNotificationUrl": receiver.lifecycle_url,
        "resource": f"/chats/{chat['id']}/messages",
        "expirationDateTime": _exp(600),
        "clientState": "teams",
    }
    assert graph.post("subscriptions", body).status_code == 201
    msg = graph.emu.control.create_chat_message(
        "Bay 5 is free", chat_id=chat["id"], **{"from": chat["members"][0]}
    )
    n = receiver.wait_for(lambda: receiver.items())[0]
    assert n["resource"] == f"chats('{chat['id']}')/messages('{msg['id']}')"
    assert n["resourceData"]["@odata.type"] == "#Microsoft.Graph.chatMessage"
    assert n["resourceData"]["id"] == msg["id"]


def test_slow_endpoint_goes_to_drop_state(graph, receiver):
    graph.emu.control.configure(
        delivery={
            "slow_threshold_s": 0.2,
            "slow_min_samples": 2,
            "batch_delay_s": 0.05,
            "batch_max": 1,
        }
    )
    _mail_sub(graph, receiver)
    receiver.notify_sleep_s = 0.3
    for i in range(2):
        graph.emu.control.create_mail(MARIA, subject=f"slow {i}")
    receiver.wait_for(
        lambda: graph.emu.control.deliveries()["endpoints"].get(receiver.url) == "drop", timeout=10
    )
    receiver.notify_sleep_s = 0
    graph.emu.control.create_mail(MARIA, subject="dropped")
    events = graph.emu.control.deliveries()["value"]
    assert any(e["event"] == "dropped" for e in events)


def test_a_renewal_that_brings_the_expiry_near_is_owed_a_reauthorization(graph, receiver):
    # The worker knows when the next lifecycle event is due and does not look before then;
    # a PATCH moving the expiry inside the reauthorization window must still count.
    graph.emu.control.configure(delivery={"reauth_before_s": 3600})
    sub = _mail_sub(graph, receiver)
    time.sleep(0.5)  # a scan has run and found nothing due for two days
    assert not receiver.items("/lifecycle")
    resp = graph.patch(f"subscriptions/{sub['id']}", {"expirationDateTime": _exp(50)})
    assert resp.status_code == 200, resp.text
    ev = receiver.wait_for(lambda: receiver.items("/lifecycle"), timeout=5)
    assert ev[0]["lifecycleEvent"] == "reauthorizationRequired"
    assert ev[0]["subscriptionId"] == sub["id"]


def test_a_backlog_is_taken_lifecycle_first_then_in_creation_order_when_due():
    queue = UrlQueue()

    def pending(created: float, next_at: float, lifecycle: bool = False) -> Pending:
        return Pending("https://r", {"n": created}, "s", lifecycle, created, next_at)

    items = [pending(1, 1), pending(2, 5), pending(3, 1), pending(4, 1, True), pending(0.5, 1)]
    for order, p in enumerate(items):
        queue.add(p, order)
    assert [p.created for p in queue.take(2.0, 3)] == [4, 0.5, 1]
    assert [p.created for p in queue.take(2.0, 3)] == [3]  # the last one is not due yet
    assert len(queue) == 1
    assert [p.created for p in queue.take(5.0, 3)] == [2] and not queue
