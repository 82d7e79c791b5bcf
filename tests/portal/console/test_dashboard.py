import pytest
from django.urls import reverse
from django.utils import timezone

from integrations.graph import auth
from integrations.graph_emulator.pytest_plugin import emulator, graph_emulator  # noqa: F401
from integrations.microsoft.models import GraphCall
from portal.access.actors import Actor
from portal.alerts import token_health
from portal.alerts.models import Alert, MetricSample
from portal.alerts.services import evaluate_all, take_sample
from portal.audit.services import record
from portal.jobs.runner import beat
from tests.conftest import NAV_BY_ROLE
from tests.integrations.microsoft.conftest import (  # noqa: F401
    _fresh_process_state,
    graph_settings,
)

pytestmark = pytest.mark.django_db

VIEWER_NAV, SUPPORT_NAV, ADMIN_NAV = (NAV_BY_ROLE[r] for r in ("viewer", "support", "admin"))


def test_it_shows_real_counts_from_the_database(client, personas):
    record("demo", actor=Actor.system("tests"), outcome="denied")
    client.force_login(personas["operator"])
    response = client.get(reverse("console:dashboard"))
    assert response.status_code == 200
    assert response.context["denied_24h"] == 1
    assert dict(response.context["users_by_role"]) == {
        "viewer": 1,
        "support": 1,
        "operator": 1,
        "admin": 1,
    }


def test_viewers_see_it_without_the_audit_trail(client, vera_viewer):
    record("demo.secret-ish", actor=Actor.system("tests"))
    client.force_login(vera_viewer)
    response = client.get(reverse("console:dashboard"))
    assert response.status_code == 200
    assert b"demo.secret-ish" not in response.content
    assert b"Audit log" not in response.content


def test_the_live_refresh_swaps_only_the_health_partial(client, vera_viewer):
    client.force_login(vera_viewer)
    body = client.get(reverse("console:dashboard"), headers={"HX-Request": "true"}).content
    assert body.decode().lstrip().startswith('<div id="health"')


@pytest.mark.parametrize(
    ("role", "visible", "hidden"),
    [
        ("viewer", VIEWER_NAV, ["Verify", "Credentials", "Recovery", "Audit log", "Django admin"]),
        ("support", SUPPORT_NAV, ["Credentials", "Recovery", "Django admin"]),
        ("operator", SUPPORT_NAV, ["Credentials", "Recovery", "Django admin"]),
        ("admin", ADMIN_NAV, []),
    ],
)
def test_navigation_shows_only_what_the_role_may_use(client, personas, role, visible, hidden):
    client.force_login(personas[role])
    labels = [
        item["label"]
        for group in client.get(reverse("console:dashboard")).context["nav_groups"]
        for item in group["items"]
    ]
    assert labels == visible
    assert not set(hidden) & set(labels)


def test_the_24_hour_chart_comes_from_the_minute_samples(client, vera_viewer):
    now = timezone.now()
    MetricSample.objects.create(
        taken_at=now, queue_length=40, dead=2, calls_ok=90, calls_failed=10, calls_throttled=3
    )
    MetricSample.objects.create(
        taken_at=now - timezone.timedelta(hours=30),
        queue_length=999,
        dead=0,
        calls_ok=1,
        calls_failed=0,
        calls_throttled=0,
    )
    client.force_login(vera_viewer)
    charts = client.get(reverse("console:dashboard"), {"range": "24h"}).context["charts"]
    assert len(charts["bars"]) == 144 and charts["has_data"]  # 10-minute buckets
    latest = charts["bars"][-1].bucket
    assert (latest.calls_ok, latest.calls_failed, latest.calls_throttled) == (90, 10, 3)
    assert latest.queue_peak == 40
    assert charts["bars"][-1].ok_height + charts["bars"][-1].failed_height == 100
    assert charts["tops"]["queue"] == 50  # the 30-hour-old sample is outside the window


def test_taking_a_sample_counts_the_last_minutes_calls():
    GraphCall.objects.create(method="GET", route="/users", status=200)
    GraphCall.objects.create(method="GET", route="/users", status=429, throttled=True)
    take_sample()
    sample = MetricSample.objects.get()
    assert (sample.calls_ok, sample.calls_failed, sample.calls_throttled) == (1, 1, 1)


@pytest.mark.django_db(transaction=True)
def test_the_demo_at_rest_is_green(client, graph_settings, emulator, vera_viewer):
    """A connected tenant with a worker, nothing wrong and no Teams sender yet: no alert
    fires, no tile warns; what is not set up says so with a link, not as a failure."""
    auth.app_token()
    beat()
    assert token_health.check() == "ok"
    evaluate_all()
    firing = list(Alert.objects.filter(state="firing").values_list("rule", flat=True))
    assert firing == []
    client.force_login(vera_viewer)
    response = client.get("/")
    health = {h["name"]: h for h in response.context["health"]}
    assert {name: h["state"] for name, h in health.items() if h["state"] != "ok"} == {
        "Teams sender": "unset",
        "Probe": "unset",  # no PROBE_MAILBOX here (make run names one)
    }
    assert health["Teams sender"]["text"].startswith("not set up")
    assert health["Probe"]["text"].startswith("not set up")
    body = response.content.decode()
    assert "alert-banner" not in body
    assert 'class="tile tile-link bad' not in body and 'class="tile tile-link warn' not in body
    assert 'class="tile bad' not in body and 'class="tile warn' not in body


@pytest.mark.parametrize(
    ("role", "linked"), [("admin", True), ("viewer", False)], ids=["admin", "viewer"]
)
def test_what_is_not_set_up_is_listed_as_steps(client, personas, role, linked):
    """No tenant, no Teams sender, no probe mailbox: three steps, each linked to the page
    that sets it up for whoever may open it."""
    client.force_login(personas[role])
    response = client.get("/")
    steps = {step["name"]: step for step in response.context["setup_steps"]}
    assert set(steps) == {"Token", "Teams sender", "Probe"}
    body = response.content.decode()
    assert "Set-up steps left" in body
    assert "Teams sender</strong>: no account connected to send Teams messages" in body
    credentials = reverse("console:credentials") + "#sender-title"
    assert (f'href="{credentials}">Set up teams sender' in body) is linked
    assert f'href="{reverse("console:probe")}">Set up probe' in body  # every role sees it
