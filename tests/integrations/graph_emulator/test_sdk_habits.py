"""Request habits of Microsoft's SDKs that Graph accepts, so the emulator must too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from tests.integrations.graph_emulator.conftest import MARIA


def test_function_calls_with_or_without_parentheses(graph):
    uid = graph.user_id(MARIA)
    for path in (
        f"users/{uid}/mailFolders/inbox/messages/delta",
        f"users/{uid}/mailFolders/inbox/messages/delta()",
        f"users/{uid}/chats/getAllMessages/delta()",
    ):
        response = graph.get(path)
        assert response.status_code == 200, (path, response.text)
        assert "value" in response.json()


def test_percent_encoded_upns_in_paths(graph):
    response = graph.get(f"users/{quote(MARIA, safe='')}")
    assert response.status_code == 200 and response.json()["userPrincipalName"] == MARIA


def test_property_names_are_matched_case_insensitively(graph, emulator):
    response = graph.post(
        f"users/{MARIA}/sendMail",
        {
            "Message": {
                "Subject": "Pascal",
                "Body": {"ContentType": "Text", "Content": "case"},
                "ToRecipients": [{"EmailAddress": {"Address": MARIA}}],
            },
            "SaveToSentItems": False,
        },
    )
    assert response.status_code == 202, response.text
    sent = emulator.control.sent_messages(kind="mail")[-1]
    assert sent["subject"] == "Pascal" and sent["sent_item_id"] is None


def test_offsets_in_date_times_and_no_client_request_id(graph, receiver):
    expires = (datetime.now(UTC) + timedelta(hours=2)).isoformat()  # "+00:00", not "Z"
    assert "+00:00" in expires
    graph.s.headers.pop("client-request-id", None)
    response = graph.post(
        "subscriptions",
        {
            "changeType": "created",
            "notificationUrl": receiver.url,
            "resource": f"users/{MARIA}/mailFolders('inbox')/messages",
            "expirationDateTime": expires,
            "clientState": "sdk-habits",
            "lifecycleNotificationUrl": receiver.lifecycle_url,
        },
    )
    assert response.status_code == 201, response.text
    created = datetime.fromisoformat(response.json()["expirationDateTime"].replace("Z", "+00:00"))
    assert abs((created - datetime.fromisoformat(expires)).total_seconds()) < 1
    assert "client-request-id" not in response.request.headers
    assert response.headers.get("request-id")
