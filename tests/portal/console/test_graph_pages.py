"""Graph calls and rate limits page (portal/console/graph_views.py) and the dashboard tiles."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from integrations import graph
from integrations.microsoft.models import Credential, GraphCall, MonitoredUser
from portal.console import metrics

pytestmark = pytest.mark.django_db

URL = "/graph/"


def call(
    status=200, *, route="/users/{id}/messages", mailbox="", ago=0, retry_after=None, **fields
):
    row = GraphCall.objects.create(
        method="GET",
        route=route,
        status=status,
        throttled=status == 429,
        mailbox=mailbox,
        retry_after=retry_after,
        duration_ms=42,
        **fields,
    )
    if ago:
        GraphCall.objects.filter(pk=row.pk).update(
            created_at=timezone.now() - timedelta(seconds=ago)
        )
    return row


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get(URL)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_viewers_see_success_rate_and_429s_by_route_and_mailbox(client, vera_viewer):
    for _ in range(7):
        call(200)
    call(429, route="/users/{id}/mailFolders/{id}/messages/delta", mailbox="u-1", retry_after=30)
    call(429, route="/users/{id}/mailFolders/{id}/messages/delta", mailbox="u-1", retry_after=30)
    call(503)
    call(200, ago=2 * 3600)  # outside the hour
    client.force_login(vera_viewer)
    response = client.get(URL)
    assert response.status_code == 200
    hour = response.context["hour"]
    assert (hour.total, hour.succeeded, hour.throttled) == (10, 7, 2)
    assert hour.success_rate == 70.0
    assert response.context["by_route"][0]["count"] == 2
    assert response.context["by_mailbox"][0]["mailbox"] == "u-1"
    body = response.content.decode()
    assert "429 throttled" in body and "70.0%" in body


def test_a_running_retry_after_shows_as_a_backoff_window(client, vera_viewer):
    call(429, mailbox="u-2", retry_after=120, route="/users/{id}/messages")
    call(429, mailbox="u-3", retry_after=1, ago=60)  # over already
    client.force_login(vera_viewer)
    backoffs = client.get(URL).context["backoffs"]
    assert [b.mailbox for b in backoffs] == ["u-2"]
    assert 100 < backoffs[0].seconds_left <= 120


def test_filters_and_keyset_pages(client, vera_viewer):
    rows = [call(200, mailbox="m") for _ in range(55)]
    call(429, mailbox="other", retry_after=5)
    client.force_login(vera_viewer)
    response = client.get(URL, {"mailbox": "M", "status": "ok"})
    assert len(response.context["calls"]) == 50
    assert response.context["older_cursor"] == rows[5].pk
    older = client.get(
        URL, {"mailbox": "m", "status": "ok", "before": response.context["older_cursor"]}
    )
    assert [c.pk for c in older.context["calls"]] == [r.pk for r in rows[:5]][::-1]
    assert older.context["older_cursor"] is None
    throttled = client.get(URL, {"throttled": "yes"}).context["calls"]
    assert [c.mailbox for c in throttled] == ["other"]


def test_the_time_window_bounds_the_list(client, vera_viewer):
    call(200, ago=3 * 3600)
    client.force_login(vera_viewer)
    assert len(client.get(URL, {"window": "1h"}).context["calls"]) == 0
    assert len(client.get(URL, {"window": "24h"}).context["calls"]) == 1


@pytest.mark.parametrize(
    "params", [{"status": "bogus"}, {"before": "-3"}, {"window": "1y"}, {"route": "x" * 400}]
)
def test_bad_filters_are_form_errors_not_500(client, vera_viewer, params):
    client.force_login(vera_viewer)
    response = client.get(URL, params)
    assert response.status_code == 200
    assert response.context["form"].errors
    assert response.context["calls"] == []


def test_htmx_filtering_swaps_only_the_calls_table(client, vera_viewer):
    call(200)
    client.force_login(vera_viewer)
    body = client.get(URL, headers={"HX-Request": "true", "HX-Target": "calls"}).content
    assert body.decode().lstrip().startswith('<section id="calls"')


def test_the_dashboard_shows_graph_queue_secret_and_health_without_calling_graph(
    client, vera_viewer, stub
):
    request = stub(graph, "request", side_effect=AssertionError("the dashboard called Graph"))
    call(200)
    call(429, retry_after=1)
    Credential.objects.create(
        display_name="prod",
        fingerprint="abc123",
        state="active",
        expires_at=timezone.now() + timedelta(days=20, hours=1),
    )
    client.force_login(vera_viewer)
    response = client.get(reverse("console:dashboard"))
    assert response.status_code == 200
    assert response.context["graph"].throttled == 1
    assert response.context["secret"]["days_left"] == 20
    assert response.context["queue"]["dead"] == 0
    health = {h["name"]: h["state"] for h in response.context["health"]}
    # One 429 is no failure of Graph; no Teams sender connected is "not set up", not bad.
    assert health == {
        "Token": "ok",
        "Graph": "ok",
        "Worker": "bad",
        "Inbox": "ok",
        "Receiver": "ok",
        "Teams sender": "unset",
        "Probe": "unset",  # no probe mailbox named: not set up, not a failure
    }
    body = response.content.decode()
    assert "days until the client secret expires" in body
    assert "subscriptions expiring within 24 h" in body
    assert not request.called


def test_humanize_seconds():
    assert metrics.humanize_seconds(None) == "—"
    assert metrics.humanize_seconds(30) == "30 s"
    assert metrics.humanize_seconds(3600) == "60 min"
    assert metrics.humanize_seconds(5 * 3600 + 60) == "5 h 01 min"
    assert metrics.humanize_seconds(3 * 86400) == "3 d 0 h"


def test_mailboxes_show_as_upns_in_one_query(client, vera_viewer, django_assert_max_num_queries):
    MonitoredUser.objects.create(identifier="a", upn="adele@fleet.example", graph_id="AAA-1")
    MonitoredUser.objects.create(identifier="b", upn="ben@fleet.example", graph_id="bbb-2")
    call(429, mailbox="aaa-1", retry_after=600)
    call(200, mailbox="bbb-2")
    call(200, mailbox="ccc-unknown")  # not monitored: the id is all there is
    client.force_login(vera_viewer)
    # The UPNs take one query however many calls the page lists.
    for n in range(20):
        call(200, mailbox=f"zzz-{n}")
    with django_assert_max_num_queries(30) as captured:
        response = client.get(URL)
    lookups = [q["sql"] for q in captured.captured_queries if "monitoreduser" in q["sql"].lower()]
    assert len(lookups) == 1
    labels = {c.mailbox: c.mailbox_label for c in response.context["calls"]}
    assert labels["aaa-1"] == "adele@fleet.example" and labels["bbb-2"] == "ben@fleet.example"
    assert labels["ccc-unknown"] == "ccc-unknown"
    assert response.context["by_mailbox"][0]["label"] == "adele@fleet.example"
    assert response.context["backoffs"][0].scope == "mailbox adele@fleet.example"
    body = response.content.decode().replace("<wbr>", "")  # long names may wrap at dots
    assert "adele@fleet.example" in body and 'title="aaa-1"' in body
    # An operator filters by the UPN they know; the calls carry the Graph id.
    by_upn = client.get(URL, {"mailbox": "Adele@fleet.example"})
    assert [c.mailbox for c in by_upn.context["calls"]] == ["aaa-1"]


def test_favicon_is_served_not_a_404(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 302 and "max-age=86400" in response["Cache-Control"]
    icon = client.get(response["Location"])
    assert icon.status_code == 200
    assert b"".join(icon.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO file
    page = client.get("/login/").content.decode()
    assert '<link rel="icon" href="/static/portal/favicon.ico"' in page


BACKOFF = "/graph/backoff"


def test_an_operator_backs_off_one_mailbox_from_the_rate_limit_view(client, otto_operator):
    MonitoredUser.objects.create(identifier="storm@contoso.test", upn="storm@contoso.test")
    call(429, retry_after=1, mailbox="storm@contoso.test")
    client.force_login(otto_operator)
    page = client.get(URL).content.decode()
    assert 'id="backoff"' in page
    assert 'href="?backoff=storm%40contoso.test#backoff"' in page  # from the 429s by mailbox
    prefilled = client.get(URL, {"backoff": "storm@contoso.test"}).context["backoff_form"]
    assert prefilled["mailbox"].value() == "storm@contoso.test"
    response = client.post(
        BACKOFF, {"mailbox": "storm@contoso.test", "minutes": "45", "reason": "429 storm"}
    )
    assert response.status_code == 302 and response["Location"] == URL + "#backoff"
    page = client.get(URL)
    (shown,) = page.context["mailbox_backoffs"]
    assert (shown.mailbox, shown.by, shown.reason) == (
        "storm@contoso.test",
        otto_operator.username,
        "429 storm",
    )
    assert shown.until == pytest.approx(
        timezone.now() + timedelta(minutes=45), abs=timedelta(seconds=10)
    )
    assert f"{shown.until:%Y-%m-%d %H:%M:%S}" in page.content.decode()


@pytest.mark.parametrize(
    ("minutes", "error"),
    [
        ("0", "greater than or equal to 1"),
        ("1441", "less than or equal to 1440"),
        ("soon", "Enter a whole number"),
    ],
)
def test_a_bad_back_off_is_a_form_error(client, otto_operator, minutes, error):
    client.force_login(otto_operator)
    response = client.post(
        BACKOFF, {"mailbox": "storm@contoso.test", "minutes": minutes, "reason": "storm"}
    )
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not response.context["mailbox_backoffs"]


def test_viewers_and_support_cannot_back_off(client, vera_viewer, sam_support):
    for persona in (vera_viewer, sam_support):
        client.force_login(persona)
        assert "Back off this mailbox" not in client.get(URL).content.decode()
        response = client.post(
            BACKOFF, {"mailbox": "x@contoso.test", "minutes": "5", "reason": "r"}
        )
        assert response.status_code == 403
