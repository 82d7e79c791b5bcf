import csv
import datetime
import io
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from integrations.microsoft.models import MonitoredUser, SyncState
from portal.access.actors import Actor
from portal.audit.models import AuditEvent
from portal.audit.services import record
from portal.console.audit_views import AUDIT_PAGE_SIZE
from portal.jobs.models import Job

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


def url(**params):
    return reverse("console:audit") + ("?" + urlencode(params) if params else "")


class TestAccess:
    def test_viewers_may_not_read_the_audit_log_and_the_attempt_is_recorded(
        self, client, vera_viewer
    ):
        client.force_login(vera_viewer)
        assert client.get(url()).status_code == 403
        assert AuditEvent.objects.filter(
            actor_name="vera-viewer", outcome="denied", target_id=reverse("console:audit")
        ).exists()

    def test_support_reads_it_but_cannot_export(self, client, sam_support):
        client.force_login(sam_support)
        response = client.get(url())
        assert response.status_code == 200
        assert b"Export CSV" not in response.content
        assert client.get(reverse("console:audit_export")).status_code == 403


class TestFilters:
    def test_by_actor_action_target_and_outcome(self, client, otto_operator):
        record(
            "subscription.renew",
            actor=Actor.system("scheduler"),
            target_type="subscription",
            target_id="abc",
        )
        record("job.retry", actor=SYSTEM, target_type="job", target_id="7", outcome="failure")
        client.force_login(otto_operator)
        by_actor = client.get(url(actor="sched")).context["events"]
        assert [e.action for e in by_actor] == ["subscription.renew"]
        by_action = client.get(url(action="job.")).context["events"]
        assert [e.target_id for e in by_action] == ["7"]
        by_target = client.get(url(target_type="subscription", target_id="abc")).context["events"]
        assert len(by_target) == 1
        by_outcome = client.get(url(outcome="failure")).context["events"]
        assert [e.action for e in by_outcome] == ["job.retry"]

    def test_by_date(self, client, otto_operator):
        record("demo", actor=SYSTEM)
        client.force_login(otto_operator)
        today = datetime.date.today()
        assert client.get(url(date_from=today.isoformat())).context["events"]
        tomorrow = today + datetime.timedelta(days=1)
        assert not client.get(url(date_from=tomorrow.isoformat())).context["events"]

    def test_bad_filters_explain_themselves_without_a_500(self, client, otto_operator):
        client.force_login(otto_operator)
        response = client.get(url(date_from="2026-13-45", before="-3", outcome="nope"))
        assert response.status_code == 200
        assert b"Enter a valid date" in response.content
        response = client.get(url(date_from="2026-02-01", date_to="2026-01-01"))
        assert b"must not be after" in response.content

    def test_htmx_requests_get_only_the_results_partial(self, client, otto_operator):
        client.force_login(otto_operator)
        response = client.get(url(), headers={"HX-Request": "true"})
        body = response.content.decode()
        assert body.lstrip().startswith('<section id="results"')
        assert "<html" not in body


def test_keyset_pagination_walks_every_event_once(client, otto_operator):
    total = AUDIT_PAGE_SIZE * 2 + 7
    for i in range(total):
        record(f"demo.{i}", actor=SYSTEM)
    client.force_login(otto_operator)
    seen, cursor, pages = [], None, 0
    while True:
        response = client.get(url(action="demo.", **({"before": cursor} if cursor else {})))
        seen += [event.id for event in response.context["events"]]
        cursor = response.context["older_cursor"]
        pages += 1
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen)) == total


def test_csv_export_is_itself_audited_and_defuses_formulas(client, otto_operator):
    record("demo.export", actor=SYSTEM, reason='=HYPERLINK("http://evil")')
    client.force_login(otto_operator)
    response = client.get(reverse("console:audit_export") + "?action=demo.")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["action"] for row in rows] == ["demo.export"]
    assert rows[0]["reason"].startswith("'=")
    export = AuditEvent.objects.get(action="audit.export")
    assert export.actor_name == "otto-operator"
    assert export.params["filters"] == {"action": "demo."}


def test_export_refuses_bad_filters_with_a_reason(client, otto_operator):
    client.force_login(otto_operator)
    response = client.get(reverse("console:audit_export") + "?date_from=yesterday")
    assert response.status_code == 400
    assert b"date_from" in response.content


def test_audit_targets_name_their_object_and_link_to_it(client, personas):
    user = MonitoredUser.objects.create(
        identifier="lena@fleetdemo.example", upn="lena@fleetdemo.example"
    )
    state = SyncState.objects.create(monitored_user=user, kind="messages")
    job = Job.objects.create(job_type="graph.sync_delta")
    actor = Actor.system("test")
    record("sync.reset", actor=actor, target_type="sync_state", target_id=f"{user.pk}:chatMessages")
    record("sync.delta", actor=actor, target_type="sync_state", target_id=state.pk)
    record("job.retry", actor=actor, target_type="job", target_id=job.pk)
    record("user.set_role", actor=actor, target_type="user", target_id=personas["viewer"].pk)
    record("subscription.delete", actor=actor, target_type="subscription", target_id="")
    client.force_login(personas["admin"])
    body = client.get("/audit/").content.decode()
    assert f'<a href="/sync/users/{user.pk}/">lena@fleetdemo.example · Teams chats</a>' in body
    assert f'<a href="/sync/users/{user.pk}/">lena@fleetdemo.example · mail</a>' in body
    assert f'<a href="/jobs/{job.pk}/">Job {job.pk} · Delta sync</a>' in body
    assert '<a href="/people/">person vera-viewer</a>' in body
    assert "subscription (none named)" in body
    # Support may read the audit log but not open People: named, not linked.
    client.force_login(personas["support"])
    body = client.get("/audit/").content.decode()
    assert "person vera-viewer" in body and '<a href="/people/">person' not in body


def test_the_action_filter_takes_the_name_or_the_words_on_the_screen(client, otto_operator):
    record("jobs.pause", actor=SYSTEM, target_type="job_queue")
    record("inbox.pause", actor=SYSTEM, target_type="inbox")
    record("job.retry", actor=SYSTEM, target_type="job", target_id="7")
    client.force_login(otto_operator)
    html = client.get(url()).content.decode()
    assert 'Paused the job queue <small class="muted machine-name">jobs.pause</small>' in html
    by_name = client.get(url(action="jobs.")).context["events"]
    assert [e.action for e in by_name] == ["jobs.pause"]
    by_words = client.get(url(action="Paused")).context["events"]
    assert sorted(e.action for e in by_words) == ["inbox.pause", "jobs.pause"]
