"""The event store and the pull feed: append-only, ordered cursor, long-polling."""

import ast
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings

from portal.access import service_clients
from portal.access.actors import Actor
from portal.events import services as events
from portal.events.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader(db):
    return service_clients.create_client(Actor.system("tests"), "dispatch-worker", ["events:read"])[
        1
    ]


def feed(client, token, **query):
    return client.get("/api/events", query, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_events_are_append_only_and_typed():
    event = events.emit("mail.received", {"graphId": "m1"}, subject="u1")
    event.data = {"graphId": "changed"}
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(ValueError, match="Unknown event type"):
        events.emit("mail.exploded", {})
    assert Event.objects.get().data == {"graphId": "m1"}


def test_the_feed_pages_in_order_with_a_stable_cursor_and_filters_types(client, reader):
    for i in range(5):
        events.emit("mail.received" if i % 2 == 0 else "message.sent", {"n": i})
    page = feed(client, reader, limit=2).json()
    assert [e["data"]["n"] for e in page["events"]] == [0, 1]
    page2 = feed(client, reader, limit=2, after=page["nextCursor"]).json()
    assert [e["data"]["n"] for e in page2["events"]] == [2, 3]
    rest = feed(client, reader, after=page2["nextCursor"]).json()
    assert [e["data"]["n"] for e in rest["events"]] == [4]
    # Nothing new: the cursor stays where it is.
    empty = feed(client, reader, after=rest["nextCursor"]).json()
    assert empty == {"events": [], "nextCursor": rest["nextCursor"]}
    mail = feed(client, reader, types="mail.received").json()
    assert [e["data"]["n"] for e in mail["events"]] == [0, 2, 4]
    assert all(e["type"] == "mail.received" for e in mail["events"])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"types": "mail.received,nope"}, "types"),
        ({"wait": "31"}, "wait"),
        ({"after": "-1"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"after": "x"}, "after"),
        ({"after": "9" * 5000}, "after"),
    ],
)
def test_bad_feed_parameters_are_400s(client, reader, query, field):
    response = feed(client, reader, **query)
    assert response.status_code == 400
    assert response.json().get("field") == field


def test_the_feed_needs_events_read(client):
    _c, sender = service_clients.create_client(
        Actor.system("tests"), "fleet-api", ["messages:send"]
    )
    assert feed(client, sender).status_code == 403
    assert client.get("/api/events").status_code == 401


def test_a_long_poll_without_events_returns_empty_after_the_wait(client, reader):
    started = time.monotonic()
    response = feed(client, reader, wait=1)
    assert response.json()["events"] == [] and time.monotonic() - started >= 0.9


LONG_WAIT = events.MAX_WAIT_SECONDS


@pytest.mark.django_db(transaction=True)
def test_a_long_poll_returns_as_soon_as_an_event_is_committed(client):
    token = service_clients.create_client(Actor.system("tests"), "w", ["events:read"])[1]
    cursor = events.latest_cursor()

    def later():
        time.sleep(0.5)
        events.emit("chat_message.received", {"graphId": "c1"})

    thread = threading.Thread(target=later)
    thread.start()
    started = time.monotonic()
    response = feed(client, token, after=cursor, wait=LONG_WAIT)
    elapsed = time.monotonic() - started
    thread.join()
    assert [e["data"]["graphId"] for e in response.json()["events"]] == ["c1"]
    # It waited for the event (0.5 s) and answered with it, long before its wait ran out: the
    # bound is the request's own wait, not a speed target, so load cannot make it flake.
    assert 0.4 <= elapsed < LONG_WAIT / 2


def test_the_event_package_never_imports_the_integration():
    """Events know no Graph: the integration imports portal.events, never the reverse."""
    root = Path(settings.BASE_DIR) / "portal" / "events"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.startswith("integrations") for n in names), path
