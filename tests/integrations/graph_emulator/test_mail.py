"""Mail: folder messages, delta (paging, deltaLink, @removed, 410), sendMail, drafts."""

from __future__ import annotations

import time

from .conftest import HANNAH, MARIA

TAG_ID = "String {00020329-0000-0000-C000-000000000046} Name X-Fleet-Idempotency-Key"


def _delta_round(graph, url, pagesize=3, **kw):
    items, pages = [], 0
    while True:
        r = graph.get(url, headers={"Prefer": f"odata.maxpagesize={pagesize}"}, **kw)
        assert r.status_code == 200, r.text
        body = r.json()
        kw = {}
        pages += 1
        assert not ("@odata.nextLink" in body and "@odata.deltaLink" in body)
        assert len(body["value"]) <= pagesize
        items += body["value"]
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"], pages
        url = body["@odata.nextLink"]


def test_list_inbox_messages_select_and_paging(graph):
    r = graph.get(
        f"users/{MARIA}/mailFolders('inbox')/messages",
        params={"$select": "subject,from", "$top": "2"},
    )
    assert r.status_code == 200
    body = r.json()
    assert len(body["value"]) == 2
    assert set(body["value"][0]) == {"id", "@odata.etag", "subject", "from"}
    assert "@odata.nextLink" in body
    msg_id = body["value"][0]["id"]
    one = graph.get(f"users/{MARIA}/messages/{msg_id}").json()
    assert one["id"] == msg_id and "body" in one
    r = graph.get(f"users/{MARIA}/messages/AAMkAGdoesnotexistAAA=")
    assert r.status_code == 404 and r.json()["error"]["code"] == "ErrorItemNotFound"


def test_mail_delta_paging_deltalink_removed_and_410(graph):
    emu = graph.emu
    url = f"users/{MARIA}/mailFolders/inbox/messages/delta"
    items, delta_link, pages = _delta_round(
        graph, url, pagesize=2, params={"$select": "subject,receivedDateTime"}
    )
    inbox_count = len(
        graph.get(f"users/{MARIA}/mailFolders/inbox/messages", params={"$top": "100"}).json()[
            "value"
        ]
    )
    assert len(items) == inbox_count and pages >= 3
    assert all(
        set(i) <= {"id", "@odata.etag", "@odata.type", "subject", "receivedDateTime"} for i in items
    )
    assert delta_link.startswith(emu.graph_url + "/users/") and "$deltatoken=" in delta_link

    # nothing changed -> empty round
    again, delta_link, _ = _delta_round(graph, delta_link)
    assert again == []

    new = emu.control.create_mail(MARIA, subject="Route change R7", body="Detour via A4")
    emu.control.delete_mail(MARIA, items[0]["id"])
    changes, delta_link, _ = _delta_round(graph, delta_link)
    by_id = {c["id"]: c for c in changes}
    assert by_id[new["id"]]["subject"] == "Route change R7"
    assert by_id[items[0]["id"]]["@removed"] == {"reason": "deleted"}

    # expired / evicted token -> 410 SyncStateNotFound
    assert emu.control.expire_delta_tokens(user=MARIA) >= 1
    r = graph.get(delta_link)
    assert r.status_code == 410
    assert r.json()["error"]["code"] == "SyncStateNotFound"
    assert "sync state generation is not found" in r.json()["error"]["message"]


def test_delta_replay_probability(graph):
    emu = graph.emu
    emu.control.configure(delta={"replay_probability": 1.0})
    _, link, _ = _delta_round(graph, f"users/{MARIA}/mailFolders/inbox/messages/delta", 50)
    items, _, _ = _delta_round(graph, link, 50)
    assert items, "with replay probability 1 the next round repeats some changes"


def test_send_mail_delivers_and_saves_to_sent_items(graph):
    emu = graph.emu
    msg = {
        "message": {
            "subject": "Fuel report week 23",
            "body": {"contentType": "Text", "content": "See attached numbers"},
            "toRecipients": [{"emailAddress": {"address": HANNAH}}],
            "internetMessageHeaders": [{"name": "x-fleet-ref", "value": "FR-23"}],
        },
        "saveToSentItems": True,
    }
    r = graph.post(f"users/{MARIA}/sendMail", msg)
    assert r.status_code == 202 and r.content == b""
    sent = graph.get(
        f"users/{MARIA}/mailFolders/sentitems/messages",
        params={"$filter": "subject eq 'Fuel report week 23'"},
    ).json()["value"]
    assert len(sent) == 1
    inbox = graph.get(
        f"users/{HANNAH}/mailFolders/inbox/messages",
        params={"$filter": "subject eq 'Fuel report week 23'"},
    ).json()["value"]
    assert len(inbox) == 1 and inbox[0]["from"]["emailAddress"]["address"] == MARIA
    log = emu.control.sent_messages(kind="mail")
    assert len(log) == 1 and log[0]["to"] == [HANNAH]
    assert log[0]["internetMessageHeaders"] == [{"name": "x-fleet-ref", "value": "FR-23"}]
    msg["saveToSentItems"] = False
    msg["message"]["subject"] = "Not saved"
    assert graph.post(f"users/{MARIA}/sendMail", msg).status_code == 202
    assert (
        graph.get(
            f"users/{MARIA}/mailFolders/sentitems/messages",
            params={"$filter": "subject eq 'Not saved'"},
        ).json()["value"]
        == []
    )


def test_send_mail_errors(graph):
    r = graph.post(f"users/{MARIA}/sendMail", {"message": {"subject": "x"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "ErrorInvalidRecipients"
    r = graph.post(
        f"users/{MARIA}/sendMail",
        {
            "message": {
                "subject": "x",
                "toRecipients": [{"emailAddress": {"address": HANNAH}}],
                "internetMessageHeaders": [{"name": "Fleet", "value": "1"}],
            }
        },
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidInternetMessageHeader"
    r = graph.s.post(
        graph.url(f"users/{MARIA}/sendMail"),
        data=b"!!!notbase64",
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "ErrorMimeContentInvalidBase64String"


def test_draft_tag_filter_and_send_once(graph):
    emu = graph.emu
    key = "outbox-42"
    draft = {
        "subject": "Maintenance reminder TRK-104",
        "body": {"contentType": "HTML", "content": "<p>Due for B-service</p>"},
        "toRecipients": [{"emailAddress": {"address": HANNAH}}],
        "singleValueExtendedProperties": [{"id": TAG_ID, "value": key}],
    }
    r = graph.post(f"users/{MARIA}/messages", draft)
    assert r.status_code == 201
    created = r.json()
    assert created["isDraft"] is True and created["id"]
    flt = f"singleValueExtendedProperties/Any(ep: ep/id eq '{TAG_ID}' and ep/value eq '{key}')"
    found = graph.get(
        f"users/{MARIA}/mailFolders/drafts/messages",
        params={
            "$filter": flt,
            "$expand": f"singleValueExtendedProperties($filter=id eq '{TAG_ID}')",
        },
    ).json()["value"]
    assert [m["id"] for m in found] == [created["id"]]
    assert found[0]["singleValueExtendedProperties"] == [{"id": TAG_ID, "value": key}]

    assert graph.post(f"users/{MARIA}/messages/{created['id']}/send").status_code == 202
    assert (
        graph.get(f"users/{MARIA}/mailFolders/drafts/messages", params={"$filter": flt}).json()[
            "value"
        ]
        == []
    )
    in_sent = graph.get(
        f"users/{MARIA}/mailFolders/sentitems/messages", params={"$filter": flt}
    ).json()["value"]
    assert len(in_sent) == 1
    # sending the same draft again fails: it is gone
    r = graph.post(f"users/{MARIA}/messages/{created['id']}/send")
    assert r.status_code == 404
    sent = [s for s in emu.control.sent_messages(kind="mail") if s["via"] == "draft.send"]
    assert len(sent) == 1 and sent[0]["singleValueExtendedProperties"][0]["value"] == key


def test_patch_and_move_generate_delta(graph):
    url = f"users/{MARIA}/mailFolders/inbox/messages/delta"
    items, link, _ = _delta_round(graph, url, 50)
    target = items[0]["id"]
    r = graph.patch(f"users/{MARIA}/messages/{target}", {"isRead": True})
    assert r.status_code == 200 and r.json()["isRead"] is True
    changes, link, _ = _delta_round(graph, link, 50)
    assert [c["id"] for c in changes] == [target]
    r = graph.post(f"users/{MARIA}/messages/{target}/move", {"destinationId": "archive"})
    assert r.status_code == 201
    changes, _, _ = _delta_round(graph, link, 50)
    assert changes == [
        {"@odata.type": "#microsoft.graph.message", "id": target, "@removed": {"reason": "deleted"}}
    ]


IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


def _tagged_draft(graph, key, headers=None, bcc=None):
    body = {
        "subject": f"Async {key}",
        "body": {"contentType": "Text", "content": "x"},
        "toRecipients": [{"emailAddress": {"address": HANNAH}}],
        "bccRecipients": [{"emailAddress": {"address": a}} for a in bcc or []],
        "singleValueExtendedProperties": [{"id": TAG_ID, "value": key}],
    }
    r = graph.post(f"users/{MARIA}/messages", body, headers=headers or {})
    assert r.status_code == 201
    return r.json()


def _sent(emu, key):
    return [
        s
        for s in emu.control.sent_messages(kind="mail")
        if s["singleValueExtendedProperties"][:1] == [{"id": TAG_ID, "value": key}]
    ]


def _wait_sent(emu, key, count=1):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if len(_sent(emu, key)) >= count:
            return _sent(emu, key)
        time.sleep(0.05)
    raise AssertionError(f"{key} never reached Sent Items")


def test_sending_a_draft_is_asynchronous_and_keeps_an_immutable_id(graph):
    emu = graph.emu
    assert emu.control.configure(mail={"send_delay_s": 1.0})["mail"]["send_delay_s"] == 1.0
    draft = _tagged_draft(
        graph, "async-1", IMMUTABLE, bcc=["erik.johansson@fleetdemo.onmicrosoft.com"]
    )
    r = graph.post(f"users/{MARIA}/messages/{draft['id']}/send", headers=IMMUTABLE)
    assert r.status_code == 202 and r.content == b""
    assert r.headers["Preference-Applied"] == 'IdType="ImmutableId"'
    # Accepted, not sent: nothing reached anyone yet and the draft is still a draft.
    assert _sent(emu, "async-1") == []
    still = graph.get(f"users/{MARIA}/messages/{draft['id']}", headers=IMMUTABLE).json()
    assert still["isDraft"] is True
    sent_items = f"users/{MARIA}/mailFolders/sentitems/messages"
    assert draft["id"] not in {m["id"] for m in graph.get(sent_items).json()["value"]}

    record = _wait_sent(emu, "async-1")[0]
    assert record["sent_item_id"] == draft["id"]  # the Sent Items copy kept the id
    item = graph.get(f"users/{MARIA}/messages/{draft['id']}", headers=IMMUTABLE).json()
    assert item["isDraft"] is False and item["subject"] == "Async async-1"
    folder = graph.get(f"users/{MARIA}/mailFolders/sentitems").json()
    assert item["parentFolderId"] == folder["id"]
    assert record["delivered_to"] == [HANNAH, "erik.johansson@fleetdemo.onmicrosoft.com"]
    drafts = graph.get(f"users/{MARIA}/mailFolders/drafts/messages").json()["value"]
    assert draft["id"] not in {m["id"] for m in drafts}


def test_without_immutable_ids_the_sent_copy_has_a_new_id(graph):
    emu = graph.emu
    emu.control.configure(mail={"send_delay_s": 0.3})
    draft = _tagged_draft(graph, "async-2")
    r = graph.post(f"users/{MARIA}/messages/{draft['id']}/send")
    assert r.status_code == 202 and "Preference-Applied" not in r.headers
    record = _wait_sent(emu, "async-2")[0]
    assert record["sent_item_id"] != draft["id"]
    assert graph.get(f"users/{MARIA}/messages/{draft['id']}").status_code == 404
    flt = f"singleValueExtendedProperties/Any(ep: ep/id eq '{TAG_ID}' and ep/value eq 'async-2')"
    found = graph.get(f"users/{MARIA}/messages", params={"$filter": flt}).json()["value"]
    assert [(m["id"], m["isDraft"]) for m in found] == [(record["sent_item_id"], False)]


def test_a_second_send_before_the_first_settled_sends_twice(graph):
    # What a client that re-sends a still-visible draft gets: two mails (the reason the
    # portal waits MESSAGING_SEND_SETTLE_SECONDS before touching a draft it asked to send).
    emu = graph.emu
    emu.control.configure(mail={"send_delay_s": 0.5})
    draft = _tagged_draft(graph, "async-3", IMMUTABLE)
    for _ in range(2):
        assert graph.post(f"users/{MARIA}/messages/{draft['id']}/send").status_code == 202
    assert len(_wait_sent(emu, "async-3", count=2)) == 2
