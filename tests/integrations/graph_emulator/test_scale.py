"""A fleet-size tenant: extra users, the subscription indexes, chat members, traffic bursts."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from integrations.graph_emulator.httptypes import Headers, Request
from integrations.graph_emulator.server import EmulatorApp
from integrations.graph_emulator.state import Chat, ResourceSpec, Subscription, SubscriptionTable

from .test_inprocess import _token


def _sub(sid: str, spec: ResourceSpec, minutes: int = 60) -> Subscription:
    return Subscription(
        id=sid,
        resource="r",
        spec=spec,
        change_types=["created"],
        notification_url="https://x",
        lifecycle_url=None,
        expiration=datetime.now(UTC) + timedelta(minutes=minutes),
        client_state=None,
        application_id="app",
        creator_id="",
    )


def test_extra_users_have_a_mailbox_message_and_a_chat(tmp_path):
    app = EmulatorApp(tmp_path, extra_users=5)
    st = app.state
    drivers = [u for u in st.users.values() if u["userPrincipalName"].startswith("driver")]
    assert len(drivers) == 5
    first = st.resolve_user("driver00001@fleetdemo.onmicrosoft.com")
    assert first is not None
    assert len(st.mailboxes[first["id"]].messages) == 1
    chats = [c for c in st.chats.values() if first["id"] in c.members]
    assert len(chats) == 1 and len(chats[0].messages) == 1
    # the odd one out has a mailbox but no chat partner
    last = st.resolve_user("driver00005@fleetdemo.onmicrosoft.com")
    assert not [c for c in st.chats.values() if last["id"] in c.members]


def test_the_subscription_table_keeps_its_indexes_through_every_change():
    table = SubscriptionTable()
    table["a"] = _sub("a", ResourceSpec("outlook", "mail_user", user_id="u1"))
    table["b"] = _sub("b", ResourceSpec("teams", "user_chats", user_id="u1"))
    table["c"] = _sub("c", ResourceSpec("teams", "all_chats"), minutes=-1)
    assert [s.id for s in table.at("outlook", "u1")] == ["a"]
    assert table.count_family("teams") == 2
    assert table.expired(table["a"].expiration - timedelta(hours=2)) == []
    assert table.expired(datetime.now(UTC)) == ["c"]
    del table["c"]
    assert table.at("all_chats") == [] and table.count_family("teams") == 1
    assert table.pop("b").id == "b" and table.pop("b", None) is None
    assert table.at("user_chats", "u1") == [] and list(table) == ["a"]
    table.clear()
    assert table.count_family("outlook") == 0 and table.by_combination == {}


def test_list_members_of_a_chat(tmp_path):
    app = EmulatorApp(tmp_path, extra_users=2)
    chat = next(c for c in app.state.chats.values() if len(c.members) == 2)
    resp = app.dispatch(
        Request(
            "GET",
            f"/v1.0/chats/{chat.data['id']}/members",
            headers=Headers({"Authorization": f"Bearer {_token(app)}"}),
        )
    )
    assert resp.status == 200
    members = resp.json()["value"]
    assert sorted(m["userId"] for m in members) == sorted(chat.members)
    assert {m["@odata.type"] for m in members} == {"#microsoft.graph.aadUserConversationMember"}


def test_a_traffic_burst_creates_each_item_once_at_its_rate(tmp_path):
    app = EmulatorApp(tmp_path, extra_users=4)
    drivers = [u["id"] for u in app.state.users.values() if u["jobTitle"] == "Driver"][-4:]
    token = app.control_token
    start = app.dispatch(
        Request(
            "POST",
            "/_emulator/traffic",
            headers=Headers(
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            ),
            body=json.dumps(
                {"users": drivers, "rate": 200, "seconds": 0.5, "mail_share": 0.5}
            ).encode(),
        )
    )
    assert start.status == 201, start.body
    app.state.traffic.join(timeout=10)
    progress = app.state.traffic.progress()
    assert progress["created"] == 100 and not progress["running"]
    assert {i["kind"] for i in progress["items"]} == {"mail", "chat"}
    assert len({i["id"] for i in progress["items"]}) == 100
    assert progress["finished"] - progress["started"] >= 0.45
    assert time.time() >= progress["finished"]
    # Items due together are created together, but none before its time (start + n / rate).
    early = [
        n
        for n, item in enumerate(progress["items"])
        if item["at"] < progress["started"] + n / 200 - 0.001
    ]
    assert early == []


def test_the_chats_of_a_user_are_indexed_in_the_order_they_were_added(tmp_path):
    app = EmulatorApp(tmp_path, extra_users=5)
    st = app.state
    for user_id in st.users:
        scanned = [c.data["id"] for c in st.chats.values() if user_id in c.members]
        assert [c.data["id"] for c in st.chats_of(user_id)] == scanned
    first, second = list(st.users)[-2:]
    chat = Chat(
        data={"id": "19:new@unq.gbl.spaces", "chatType": "oneOnOne"}, members=[first, second]
    )
    st.add_chat(chat)
    st.add_chat(chat)  # stored again: still once in the index
    assert [c.data["id"] for c in st.chats_of(second)].count("19:new@unq.gbl.spaces") == 1
