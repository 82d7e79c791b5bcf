"""The console's search box: each kind of object by its ids and names, only what the role may
see, straight to the page of a unique hit."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.urls import reverse
from django.utils import timezone

from integrations.microsoft.models import GraphCall, MonitoredUser, OutboundMessage, Subscription
from portal.access.actors import Actor
from portal.audit.services import record
from portal.events.models import EventEndpoint
from portal.jobs.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db):
    job = Job.objects.create(
        job_type="graph.sync_delta", payload={}, idempotency_key="sync-key-77", status="dead"
    )
    message = OutboundMessage.objects.create(
        channel="mail",
        status="sent",
        body="x",
        idempotency_key="order-4711-confirmation",
        sender="dispatch@fleetdemo.example",
        to_recipients=["driver.kim@fleetdemo.example"],
        internet_message_id="<AAkALgAAAAAAHYQDEapmEc2byACqAC@fleetdemo.example>",
    )
    user = MonitoredUser.objects.create(
        identifier="lena.ortiz@fleetdemo.example",
        upn="lena.ortiz@fleetdemo.example",
        display_name="Lena Ortiz",
        graph_id="6e1c2b1e-0000-4c3b-9a8e-000000000001",
    )
    subscription = Subscription.objects.create(
        monitored_user=user,
        kind="messages",
        graph_id="7f9c2b1e-5d4a-4c3b-9a8e-000000000042",
        resource="users/x/messages",
        change_types="created",
        notification_url="https://portal.example/api/webhooks/mail",
        client_state_encrypted="x",
    )
    call = GraphCall.objects.create(
        method="POST",
        route="/users/{id}/sendMail",
        status=202,
        request_id="0b6a1f3e-9d2c-4f6b-8a51-3c2d1e0f9a87",
    )
    endpoint = EventEndpoint.objects.create(
        url="https://dispatch.fleet.example/hooks/m365", secret_encrypted="x"
    )
    record("sync.reset", actor=Actor.system("test"), target_type="sync_state", target_id="a1b2c3d4")
    return {
        "job": job,
        "message": message,
        "user": user,
        "subscription": subscription,
        "call": call,
        "endpoint": endpoint,
    }


def search(client, query: str, **extra: str):
    return client.get(reverse("console:search"), {"q": query, **extra})


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sync-key-77", lambda w: reverse("console:job_detail", args=[w["job"].pk])),
        ("order-4711-confirmation", lambda w: reverse("console:message", args=[w["message"].pk])),
        (
            "AAkALgAAAAAAHYQDEapmEc2byACqAC@fleetdemo.example",
            lambda w: reverse("console:message", args=[w["message"].pk]),
        ),
        (
            "driver.kim@fleetdemo.example",
            lambda w: reverse("console:message", args=[w["message"].pk]),
        ),
        ("lena.ortiz@", lambda w: reverse("console:sync_user", args=[w["user"].pk])),
        ("Lena Ortiz", lambda w: reverse("console:sync_user", args=[w["user"].pk])),
        (
            "7f9c2b1e-5d4a-4c3b-9a8e-000000000042",
            lambda w: reverse("console:subscriptions") + f"?id={w['subscription'].pk}",
        ),
        (
            "0b6a1f3e-9d2c-4f6b-8a51-3c2d1e0f9a87",
            lambda w: (
                reverse("console:graph_calls") + "?request_id=0b6a1f3e-9d2c-4f6b-8a51-3c2d1e0f9a87"
            ),
        ),
        (
            "dispatch.fleet.example",
            lambda w: reverse("console:event_endpoint", args=[w["endpoint"].pk]),
        ),
        (
            "a1b2c3d4",
            lambda w: (
                reverse("console:audit")
                + "?"
                + urlencode({"target_type": "sync_state", "target_id": "a1b2c3d4"})
            ),
        ),
    ],
)
def test_a_unique_hit_opens_its_page(client, ada_admin, world, query, expected):
    client.force_login(ada_admin)
    response = search(client, query)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == expected(world)
    assert client.get(response["Location"]).status_code == 200


def test_an_id_shared_by_several_kinds_lists_them_all(client, ada_admin, world):
    client.force_login(ada_admin)
    # A job and a message with the same number.
    Job.objects.filter(pk=world["job"].pk).update(id=5000)
    OutboundMessage.objects.filter(pk=world["message"].pk).update(id=5000)
    response = search(client, "5000")
    assert response.status_code == 200
    kinds = [hit.kind for hit in response.context["hits"]]
    assert "Job" in kinds and "Message" in kinds
    assert b"results for" in response.content


def test_results_respect_the_role(client, vera_viewer, world):
    client.force_login(vera_viewer)
    # A viewer may not open event endpoints nor the audit log: neither is searched.
    assert search(client, "dispatch.fleet.example").context["hits"] == []
    assert search(client, "a1b2c3d4").context["hits"] == []
    # Messages are open to viewers.
    assert search(client, "order-4711-confirmation").status_code == 302


def test_nothing_found_says_so_and_bad_input_is_no_error(client, otto_operator, world):
    client.force_login(otto_operator)
    response = search(client, "no-such-thing-anywhere")
    assert response.status_code == 200
    assert b"Nothing matches" in response.content
    assert search(client, "").status_code == 200
    assert search(client, "x" * 5000).status_code == 200
    assert search(client, "99999999999999999999999").status_code == 200
    assert search(client, "%_\\'\"<script>").status_code == 200


def test_the_graph_calls_page_finds_an_old_call_by_its_request_id(client, vera_viewer, world):
    GraphCall.objects.filter(pk=world["call"].pk).update(
        created_at=timezone.now() - timezone.timedelta(days=20)
    )
    client.force_login(vera_viewer)
    response = client.get(reverse("console:graph_calls"), {"request_id": world["call"].request_id})
    assert [call.pk for call in response.context["calls"]] == [world["call"].pk]


def test_every_page_has_the_search_box(client, vera_viewer):
    client.force_login(vera_viewer)
    body = client.get(reverse("console:jobs")).content.decode()
    assert 'role="search"' in body and 'id="site-search"' in body


def test_the_messages_filters_search_every_status(client, vera_viewer, world):
    client.force_login(vera_viewer)
    url = reverse("console:messages")
    # Opening the page shows the failures; the sent message is not among them.
    assert list(client.get(url).context["rows"]) == []
    # Looking for a recipient finds it whatever its status, under the All tab.
    response = client.get(url, {"recipient": "driver.kim@"})
    assert [m.pk for m in response.context["rows"]] == [world["message"].pk]
    assert response.context["status"] == "all"
    tabs = {tab: count for tab, count, _ in response.context["tabs"]}
    assert tabs["all"] == 1 and tabs["sent"] == 1
    # A tab still narrows it down.
    assert (
        list(client.get(url, {"recipient": "driver.kim@", "status": "failed"}).context["rows"])
        == []
    )
