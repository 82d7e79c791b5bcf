"""Subscriptions: validation handshake, lifetimes, rules, CRUD, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from integrations.graph_emulator.httptypes import parse_iso

from .conftest import MARIA, Graph


def _exp(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sub(graph, receiver, resource=None, minutes=600, lifecycle=True, **extra):
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": receiver.url,
        "resource": resource or f"users/{graph.user_id(MARIA)}/mailFolders('inbox')/messages",
        "expirationDateTime": _exp(minutes),
        "clientState": "s3cret-state",
        **extra,
    }
    if lifecycle:
        body["lifecycleNotificationUrl"] = receiver.lifecycle_url
    return graph.post("subscriptions", body)


def test_create_runs_handshake_on_both_urls(graph, receiver):
    r = _sub(graph, receiver)
    assert r.status_code == 201, r.text
    sub = r.json()
    for key in (
        "id",
        "resource",
        "applicationId",
        "changeType",
        "clientState",
        "notificationUrl",
        "lifecycleNotificationUrl",
        "expirationDateTime",
        "creatorId",
        "latestSupportedTlsVersion",
        "includeResourceData",
        "encryptionCertificate",
        "encryptionCertificateId",
        "notificationContentType",
    ):
        assert key in sub
    assert sub["clientState"] == "s3cret-state"
    assert sub["applicationId"] == graph.emu.client_id
    assert sub["latestSupportedTlsVersion"] == "v1_2"
    paths = sorted(v["path"].split("?")[0] for v in receiver.validations)
    assert paths == ["/lifecycle", "/notify"]
    v = receiver.validations[0]
    assert v["token"].startswith("Validation: Testing client application reachability")
    assert "%20" in v["path"] or "+" in v["path"]  # token was URL-encoded on the wire
    assert v["content_type"].startswith("text/plain")


@pytest.mark.parametrize("mode", ["wrong", "status500", "html"])
def test_handshake_failures_reject_creation(graph, receiver, mode):
    receiver.validation_mode = mode
    r = _sub(graph, receiver)
    assert r.status_code == 400
    assert "Subscription validation request failed" in r.json()["error"]["message"]
    assert graph.get("subscriptions").json()["value"] == []


def test_handshake_timeout(graph, receiver):
    graph.emu.control.configure(subscriptions={"handshake_timeout_s": 0.5})
    receiver.validation_mode = "sleep"
    receiver.sleep_s = 1.5
    r = _sub(graph, receiver, lifecycle=False)
    assert r.status_code == 400
    assert "timed out" in r.json()["error"]["message"]


def test_url_rules(graph, receiver):
    r = _sub(graph, receiver, notificationUrl="http://example.com/notify", lifecycle=False)
    assert r.status_code == 400
    assert receiver.validations == []


def test_lifetime_max_and_floor(graph, receiver):
    r = _sub(graph, receiver, minutes=10_080)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "ExtensionError"
    assert "Subscription expiration can only be 10070 minutes in the future." in err["message"]
    r = _sub(graph, receiver, minutes=10)
    assert r.status_code == 201
    exp = parse_iso(r.json()["expirationDateTime"])
    assert timedelta(minutes=44) < exp - datetime.now(UTC) <= timedelta(minutes=45, seconds=5)


def test_teams_lifecycle_url_rule_and_max(graph, receiver):
    r = _sub(graph, receiver, resource="/chats/getAllMessages", minutes=120, lifecycle=False)
    assert r.status_code == 400
    assert "lifecycleNotificationUrl is a required property" in r.json()["error"]["message"]
    r = _sub(graph, receiver, resource="/chats/getAllMessages", minutes=50, lifecycle=False)
    assert r.status_code == 201, r.text
    r = _sub(graph, receiver, resource="/teams/getAllMessages", minutes=4_400)
    assert r.status_code == 400 and "4320 minutes" in r.json()["error"]["message"]


def test_duplicate_is_409_and_quota_is_403(graph, receiver):
    assert _sub(graph, receiver).status_code == 201
    r = _sub(graph, receiver)
    assert r.status_code == 409
    assert "already exists for the requested combination" in r.json()["error"]["message"]
    graph.emu.control.configure(subscriptions={"mailbox_quota": 1})
    r = _sub(graph, receiver, resource=f"users/{graph.user_id(MARIA)}/messages")
    assert r.status_code == 403
    assert "1 subscriptions per mailbox" in r.json()["error"]["message"]


def test_client_state_limit(graph, receiver):
    r = _sub(graph, receiver, clientState="x" * 129)
    assert r.status_code == 400


def test_get_list_renew_reauthorize_delete(graph, receiver):
    sub = _sub(graph, receiver, minutes=100).json()
    got = graph.get(f"subscriptions/{sub['id']}").json()
    assert got["clientState"] == "s3cret-state"
    listed = graph.get("subscriptions").json()["value"]
    assert [s["id"] for s in listed] == [sub["id"]]
    assert listed[0]["clientState"] is None
    n_validations = len(receiver.validations)
    r = graph.patch(f"subscriptions/{sub['id']}", {"expirationDateTime": _exp(3000)})
    assert r.status_code == 200
    assert parse_iso(r.json()["expirationDateTime"]) > parse_iso(sub["expirationDateTime"])
    assert len(receiver.validations) == n_validations  # plain renewal: no handshake
    r = graph.patch(f"subscriptions/{sub['id']}", {"lifecycleNotificationUrl": receiver.url})
    assert r.status_code == 400
    r = graph.post(f"subscriptions/{sub['id']}/reauthorize")
    assert r.status_code == 204 and r.content == b""
    assert graph.delete(f"subscriptions/{sub['id']}").status_code == 204
    assert graph.get(f"subscriptions/{sub['id']}").status_code == 404


def test_other_apps_do_not_see_subscriptions(graph, receiver):
    sub = _sub(graph, receiver).json()
    other = graph.emu.control.create_app(roles=["Mail.Read"])
    s = graph.emu.session()
    s.headers["Authorization"] = "Bearer " + graph.emu.token(
        other["client_id"], other["client_secret"]
    )
    assert s.get(f"{graph.emu.graph_url}/subscriptions").json()["value"] == []
    assert s.get(f"{graph.emu.graph_url}/subscriptions/{sub['id']}").status_code == 404


def test_expiry_deletes_subscription(graph, receiver):
    sub = _sub(graph, receiver, minutes=45, lifecycle=False).json()
    graph.emu.control.advance_clock(46 * 60)
    receiver.wait_for(lambda: not graph.emu.control.subscriptions(), timeout=5)
    token_ok = graph.get(f"subscriptions/{sub['id']}")
    # the token itself was issued before the jump and is still within 1 h
    assert token_ok.status_code == 404


def test_missing_permission_for_subscription(graph, receiver):
    graph.emu.control.set_roles(graph.emu.client_id, ["User.Read.All"])

    limited = Graph(graph.emu)
    r = _sub(limited, receiver)
    assert r.status_code == 403


def test_subscription_list_budget(graph):
    graph.emu.control.configure(throttling={"subscription_list_limit": 3})
    codes = [graph.get("subscriptions").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429


def test_without_opting_in_http_and_local_urls_are_refused_as_graph_does(emulator, graph):
    """Graph wants https and cannot reach loopback or private addresses; the emulator holds
    to that unless a test (or the demo) opts in to its local receiver."""
    resource = f"users/{graph.user_id(MARIA)}/mailFolders('inbox')/messages"
    for url, reason in (
        ("http://127.0.0.1:9/notify", "must use HTTPS"),
        ("https://127.0.0.1:9/notify", "loopback or private address"),
        ("https://10.1.2.3/notify", "loopback or private address"),
        ("https://[::1]:9/notify", "loopback or private address"),
    ):
        r = graph.post(
            "subscriptions",
            {
                "changeType": "created",
                "notificationUrl": url,
                "resource": resource,
                "expirationDateTime": _exp(600),
                "clientState": "s",
            },
        )
        assert r.status_code == 400, url
        assert reason in r.json()["error"]["message"], url
    assert emulator.control.subscriptions() == []
