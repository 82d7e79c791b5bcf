"""Subscriptions pages (portal/console/subscriptions_views.py). Graph is replaced at the
service boundary here; tests/browser/test_graph_pages.py renews against the emulator."""

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.graph.errors import GraphError
from integrations.microsoft import subscriptions
from integrations.microsoft.models import LifecycleEvent, MonitoredUser, Subscription
from portal.audit.models import AuditEvent
from portal.console.subscriptions_views import TYPED_CONFIRMATION_THRESHOLD
from portal.jobs.models import BulkOperation, Job
from portal.jobs.runner import run_job
from tests.integrations.microsoft.webhook_support import make_sub

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(db):
    return MonitoredUser.objects.create(
        identifier="driver1@fleet.test", graph_id="g-1", upn="driver1@fleet.test"
    )


def sub(user, n, *, hours=48, **fields):
    now = timezone.now()
    return make_sub(
        user,
        graph_id=f"graph-{n}",
        expiration=now + timedelta(hours=hours),
        lifetime_started_at=now - timedelta(hours=1),
        lifecycle_url="https://x/api/webhooks/lifecycle",
        **fields,
    )


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def test_viewers_see_the_list_with_expiry_against_the_maximum(client, vera_viewer, user):
    s = sub(user, 1, hours=24 * 3)
    expired = sub(user, 2, hours=-1)
    event = LifecycleEvent.objects.create(
        subscription=s,
        subscription_graph_id=s.graph_id,
        event="missed",
        dedupe_key="k1",
        status="handled",
        outcome="delta resync requested",
        followup_job=Job.objects.create(job_type="graph.sync_delta"),
    )
    client.force_login(vera_viewer)
    response = client.get("/subscriptions/")
    assert response.status_code == 200
    rows = {r.pk: r for r in response.context["rows"]}
    # 72 h of messages' 10,000-minute maximum is about 43 %.
    assert rows[s.pk].percent_left == 43
    assert rows[expired.pk].expired
    body = response.content.decode()
    assert "expired" in body and "delta resync requested" in body
    assert f"#{event.followup_job_id}" in body
    assert response.context["expiring"] == 1
    assert "Renew</button>" not in body  # viewers get no action buttons


def test_filters_keyset_and_bad_input(client, vera_viewer, user):
    rows = [sub(user, n) for n in range(53)]
    sub(user, 99, hours=2)
    client.force_login(vera_viewer)
    response = client.get("/subscriptions/", {"state": "active"})
    assert len(response.context["rows"]) == 50
    older = client.get(
        "/subscriptions/", {"state": "active", "before": response.context["older_cursor"]}
    )
    assert len(older.context["rows"]) == 4
    assert [r.graph_id for r in client.get("/subscriptions/", {"expiring": 3}).context["rows"]] == [
        "graph-99"
    ]
    assert rows
    for bad in ({"state": "nope"}, {"expiring": "-1"}, {"before": "x"}):
        response = client.get("/subscriptions/", bad)
        assert response.status_code == 200 and response.context["form"].errors
    partial = client.get(
        "/subscriptions/", headers={"HX-Request": "true", "HX-Target": "subscriptions"}
    )
    assert partial.content.decode().lstrip().startswith('<section id="subscriptions"')


def test_operators_renew_one_and_graph_errors_become_messages(client, otto_operator, user, stub):
    s = sub(user, 1)
    renew = stub(subscriptions, "renew", return_value=s)
    client.force_login(otto_operator)
    response = client.post(f"/subscriptions/{s.pk}/renew", follow=True)
    (actor, subscription_id), _ = renew.call_args
    assert (actor.name, subscription_id) == ("otto-operator", s.pk)
    assert any("renewed" in m for m in messages_of(response))
    renew.side_effect = GraphError("Graph said no", status=400)
    response = client.post(f"/subscriptions/{s.pk}/renew", follow=True)
    assert any("Graph said no" in m for m in messages_of(response))
    assert client.post("/subscriptions/999/renew").status_code == 404


def test_support_may_not_renew(client, sam_support, user):
    s = sub(user, 1)
    client.force_login(sam_support)
    assert client.post(f"/subscriptions/{s.pk}/renew").status_code == 403
    assert AuditEvent.objects.filter(outcome="denied", actor_name="sam-support").exists()


def test_delete_and_recreate_show_their_impact_before_acting(client, otto_operator, user, stub):
    s = sub(user, 1)
    delete = stub(subscriptions, "delete")
    recreate = stub(subscriptions, "recreate", return_value=s)
    client.force_login(otto_operator)
    page = client.get(f"/subscriptions/{s.pk}/delete")
    assert "Notifications for driver1@fleet.test stop" in page.content.decode()
    page = client.get(f"/subscriptions/{s.pk}/recreate")
    assert "delta sync" in page.content.decode()
    assert not delete.called and not recreate.called
    client.post(f"/subscriptions/{s.pk}/recreate")
    client.post(f"/subscriptions/{s.pk}/delete")
    assert recreate.call_args.args[1] == s.pk and delete.call_args.args[1] == s.pk


def test_bulk_renew_previews_then_needs_the_typed_count(client, otto_operator, user, stub):
    count = TYPED_CONFIRMATION_THRESHOLD + 1
    expiring = [sub(user, n, hours=5) for n in range(count)]
    sub(user, 500, hours=100)
    renewed = []

    def renew(actor, subscription_id):
        renewed.append(subscription_id)
        return Subscription.objects.get(pk=subscription_id)

    stub(subscriptions, "renew", side_effect=renew)
    client.force_login(otto_operator)
    preview = client.get("/subscriptions/renew-expiring", {"hours": 24})
    assert preview.context["count"] == count and len(preview.context["sample"]) == 5
    assert renewed == []
    wrong = client.post("/subscriptions/renew-expiring", {"hours": 24, "confirm_count": "3"})
    assert wrong.status_code == 400 and renewed == []
    started = client.post(
        "/subscriptions/renew-expiring", {"hours": 24, "confirm_count": str(count)}
    )
    operation = BulkOperation.objects.get(kind="renew_subscriptions")
    assert started["Location"] == f"/jobs/operations/{operation.pk}/"
    assert renewed == []  # renewed in the background, not in the request
    run_job(operation.job_id)  # what a worker does
    assert sorted(renewed) == sorted(s.pk for s in expiring)
    operation.refresh_from_db()
    assert (operation.status, operation.succeeded, operation.total) == ("done", count, count)
    progress = client.get(started["Location"])
    assert f"{count} done".encode() in progress.content
    event = AuditEvent.objects.get(action="subscription.bulk_renew")
    assert event.params["count"] == count
    assert client.post("/subscriptions/renew-expiring", {"hours": "x"}).status_code == 400


def test_setup_and_cleanup_are_dry_runs_until_confirmed(client, otto_operator, stub):
    runs = []

    def fake(name):
        def service(actor, *, dry_run=False, deadline=None):
            runs.append((name, dry_run))
            summary = subscriptions.Summary(name, dry_run=dry_run)
            summary.created.append("driver1 messages")
            return summary

        return service

    stub(subscriptions, "setup", side_effect=fake("setup_webhooks"))
    stub(subscriptions, "cleanup", side_effect=fake("cleanup_webhooks"))
    client.force_login(otto_operator)
    page = client.get("/subscriptions/setup")
    assert "would be created: driver1 messages" in page.content.decode()
    assert runs == [("setup_webhooks", True)]
    client.post("/subscriptions/setup")  # no confirmation: nothing happens
    assert runs == [("setup_webhooks", True)]
    started = client.post("/subscriptions/setup", {"confirm": "yes"})
    job = Job.objects.get(job_type="graph.subscriptions_run")
    assert started["Location"] == f"/subscriptions/runs/{job.pk}/"
    assert runs == [("setup_webhooks", True)]  # runs in the background, not in the request
    waiting = client.get(started["Location"], headers={"HX-Request": "true"})
    assert b"waiting for a worker" in waiting.content
    assert b'data-poll-seconds="1" hx-trigger="poll"' in waiting.content
    run_job(job.pk)
    assert runs[-1] == ("setup_webhooks", False)
    done = client.get(started["Location"])
    assert b"<strong>1</strong> created" in done.content
    assert AuditEvent.objects.filter(
        action="webhooks.setup.start", actor_name="otto-operator"
    ).exists()
    client.get("/subscriptions/cleanup")
    client.post("/subscriptions/cleanup", {"confirm": "yes"})
    run_job(Job.objects.filter(job_type="graph.subscriptions_run").order_by("-id")[0].pk)
    assert runs[-2:] == [("cleanup_webhooks", True), ("cleanup_webhooks", False)]


def test_compare_puts_database_and_graph_side_by_side(client, otto_operator, user, stub, settings):
    settings.PUBLIC_BASE_URL = "https://portal.test"
    in_step = sub(user, 1)
    sub(user, 2)  # active here, gone from Graph
    remote = [
        {
            "id": "graph-1",
            "resource": in_step.resource,
            "expirationDateTime": in_step.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "notificationUrl": "https://portal.test/api/webhooks/mail",
        },
        {
            "id": "orphan",
            "resource": "users/x/messages",
            "expirationDateTime": "2030-01-01T00:00:00Z",
            "notificationUrl": "https://portal.test/api/webhooks/mail",
        },
        {
            "id": "theirs",
            "resource": "users/y/messages",
            "expirationDateTime": "2030-01-01T00:00:00Z",
            "notificationUrl": "https://elsewhere.test/api/webhooks/mail",
        },
    ]
    listed = stub(subscriptions, "list_remote", return_value=remote)
    client.force_login(otto_operator)
    response = client.get("/subscriptions/compare")
    verdicts = {
        (p.sub.graph_id if p.sub else p.remote["id"]): p.verdict for p in response.context["pairs"]
    }
    assert verdicts["graph-1"] == "in step"
    assert verdicts["graph-2"].startswith("missing in Graph")
    assert verdicts["orphan"].startswith("orphan of this deployment")
    assert verdicts["theirs"].startswith("another deployment")
    partial = client.get("/subscriptions/compare", headers={"HX-Request": "true"})
    assert partial.content.decode().lstrip().startswith('<section id="compare"')

    listed.side_effect = GraphError("Graph is down", status=503)
    response = client.get("/subscriptions/compare")
    assert response.status_code == 200 and "Graph is down" in response.content.decode()
