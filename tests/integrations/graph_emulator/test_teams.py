"""Teams: chats, getAllMessages delta, POST rules (app-only refused, delegated OK), 1 rps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .conftest import BOT, Graph, delegated_token


def _bot_chat(emu):
    tenant = emu.control.tenant()
    bot_id = next(u["id"] for u in tenant["users"] if u["userPrincipalName"] == BOT)
    chat = next(c for c in tenant["chats"] if c["topic"] == "Dispatch desk")
    return bot_id, chat, tenant


def test_list_chats_and_messages(graph):
    bot_id, chat, _ = _bot_chat(graph.emu)
    chats = graph.get(f"users/{bot_id}/chats").json()["value"]
    assert chat["id"] in {c["id"] for c in chats}
    msgs = graph.get(f"chats/{chat['id']}/messages", params={"$top": "2"}).json()
    assert len(msgs["value"]) == 2 and "@odata.nextLink" in msgs
    m = msgs["value"][0]
    assert m["messageType"] == "message" and m["id"].isdigit()
    assert m["from"]["user"]["userIdentityType"] == "aadUser"


def test_user_chats_delta(graph):
    emu = graph.emu
    bot_id, chat, _ = _bot_chat(emu)
    url = f"users/{bot_id}/chats/getAllMessages/delta"
    items = []
    while True:
        body = graph.get(url, params=None if "token" in url else {"$top": "4"}).json()
        items += body["value"]
        if "@odata.deltaLink" in body:
            link = body["@odata.deltaLink"]
            break
        url = body["@odata.nextLink"]
    assert items and all(i["@odata.type"] == "#microsoft.graph.chatMessage" for i in items)
    new = emu.control.create_chat_message(
        "Truck 104 back on the road", chat_id=chat["id"], **{"from": BOT}
    )
    body = graph.get(link).json()
    assert [i["id"] for i in body["value"]] == [new["id"]]
    assert "@odata.deltaLink" in body
    emu.control.expire_delta_tokens()
    r = graph.get(body["@odata.deltaLink"])
    assert r.status_code == 410 and r.json()["error"]["code"] == "SyncStateNotFound"


def test_app_only_post_is_refused(graph):
    emu = graph.emu
    _, chat, tenant = _bot_chat(emu)
    r = graph.post(f"chats/{chat['id']}/messages", {"body": {"content": "hello"}})
    assert r.status_code == 403
    assert "Teamwork.Migrate.All" in r.json()["error"]["message"]
    emu.control.set_roles(emu.client_id, ["Chat.Read.All", "Teamwork.Migrate.All"])
    migrate = Graph(emu)
    r = migrate.post(f"chats/{chat['id']}/messages", {"body": {"content": "hello"}})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "Unauthorized"
    assert "only for import purposes" in r.json()["error"]["message"]
    team = tenant["teams"][0]
    ch = team["channels"][0]
    r = migrate.post(
        f"teams/{team['id']}/channels/{ch['id']}/messages", {"body": {"content": "hi"}}
    )
    assert r.status_code == 401
    assert emu.control.sent_messages() == []


def test_delegated_post_chat_and_channel(graph):
    emu = graph.emu
    _, chat, tenant = _bot_chat(emu)
    bot = Graph(emu, token=delegated_token(emu))
    r = bot.post(
        f"chats/{chat['id']}/messages",
        {"body": {"contentType": "html", "content": "<b>Bay 3 blocked</b>"}},
    )
    assert r.status_code == 201, r.text
    msg = r.json()
    assert msg["id"].isdigit() and abs(int(msg["id"]) / 1000 - __import__("time").time()) < 60
    assert msg["chatId"] == chat["id"]
    assert msg["from"]["user"]["displayName"] == "Fleet Bot"
    team = tenant["teams"][0]
    ch = team["channels"][1]
    r = bot.post(
        f"teams/{team['id']}/channels/{ch['id']}/messages", {"body": {"content": "Dispatch update"}}
    )
    assert r.status_code == 201
    assert r.json()["channelIdentity"] == {"teamId": team["id"], "channelId": ch["id"]}
    sent = emu.control.sent_messages()
    assert [s["kind"] for s in sent] == ["chat", "channel"]
    r = bot.post(f"chats/{chat['id']}/messages", {"body": {"content": ""}})
    assert r.status_code == 400


def test_chat_post_one_per_second(graph):
    emu = graph.emu
    _, chat, _ = _bot_chat(emu)
    bot = Graph(emu, token=delegated_token(emu))
    first = bot.post(f"chats/{chat['id']}/messages", {"body": {"content": "one"}})
    second = bot.post(f"chats/{chat['id']}/messages", {"body": {"content": "two"}})
    assert first.status_code == 201
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1
    log = emu.control.requests_log(path="/messages$", method="POST")
    assert [e["throttled"] for e in log] == [False, True]


def test_app_only_message_reads_need_the_protected_api_approval(graph, receiver):
    emu = graph.emu
    bot_id, chat, tenant = _bot_chat(emu)
    team = tenant["teams"][0]
    channel = team["channels"][0]
    emu.control.set_protected_api(emu.client_id, False)
    protected = [
        f"chats/{chat['id']}/messages",
        f"users/{bot_id}/chats/getAllMessages",
        f"users/{bot_id}/chats/getAllMessages/delta",
        f"teams/{team['id']}/channels/{channel['id']}/messages",
        f"teams/{team['id']}/channels/{channel['id']}/messages/delta",
    ]
    for path in protected:
        r = graph.get(path)
        assert r.status_code == 403, path
        assert "requires Protected API access" in r.json()["error"]["message"], path
    # Subscribing to those messages is protected too.
    r = graph.post(
        "subscriptions",
        {
            "changeType": "created",
            "notificationUrl": receiver.url,
            "lifecycleNotificationUrl": receiver.lifecycle_url,
            "resource": f"/users/{bot_id}/chats/getAllMessages",
            "expirationDateTime": (datetime.now(UTC) + timedelta(minutes=50))
            .isoformat()
            .replace("+00:00", "Z"),
            "clientState": "s",
        },
    )
    assert r.status_code == 403 and "Protected API" in r.json()["error"]["message"]
    # Not protected: the chat list, and the same reads with a delegated token.
    assert graph.get(f"users/{bot_id}/chats").status_code == 200
    bot = Graph(emu, token=delegated_token(emu, scopes="Chat.ReadWrite offline_access openid"))
    assert bot.get(f"chats/{chat['id']}/messages").status_code == 200
    emu.control.set_protected_api(emu.client_id, True)
    assert all(graph.get(path).status_code == 200 for path in protected)


def test_get_all_messages_delta_pages_with_top_and_ignores_prefer(graph):
    """As documented for chatMessage: delta: $top (at most 50) sets the page size; the
    Prefer: odata.maxpagesize header is not honoured on this route."""
    emu = graph.emu
    bot_id, chat, _ = _bot_chat(emu)
    for i in range(60):
        emu.control.create_chat_message(f"load {i}", chat_id=chat["id"], **{"from": BOT})
    url = f"users/{bot_id}/chats/getAllMessages/delta"
    default = graph.get(url).json()
    preferred = graph.get(url, headers={"Prefer": "odata.maxpagesize=3"})
    assert len(preferred.json()["value"]) == len(default["value"]) != 3
    assert "Preference-Applied" not in preferred.headers
    assert len(graph.get(url, params={"$top": "3"}).json()["value"]) == 3
    assert len(graph.get(url, params={"$top": "500"}).json()["value"]) == 50
