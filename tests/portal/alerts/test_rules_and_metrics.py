import re
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
import yaml
from django.conf import settings
from django.core import mail
from django.core.exceptions import PermissionDenied
from django.urls import resolve
from django.utils import timezone

from integrations.microsoft.models import DelegatedAccount, GraphCall, OutboundMessage
from portal.access.actors import Actor, role_of
from portal.alerts import services
from portal.alerts.models import Alert, AlertEvent
from portal.alerts.rules import RULES
from portal.audit.models import AuditEvent
from portal.jobs.models import Job
from portal.jobs.runner import beat
from portal.runtime import registry

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_settings_cache():
    registry.clear_cache()
    yield
    registry.clear_cache()


def scrape(client, **extra):
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    return response.content.decode()


def metric_names(text):
    """Every family /metrics declares (a family may have no sample yet, e.g. no secret)."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


class TestMetrics:
    def test_a_scrape_exports_every_family(self, client):
        Job.objects.create(job_type="jobs.noop", status=Job.Status.DEAD)
        GraphCall.objects.create(method="GET", route="/users", status=429, throttled=True)
        beat()
        services.check_audit_chain()
        services.evaluate_all()
        text = scrape(client)
        for name in (
            "fleet_graph_calls_last_hour",
            "fleet_graph_throttled_last_hour",
            "fleet_graph_failed_last_hour",
            "fleet_graph_total_last_hour",
            "fleet_graph_latency_seconds_last_hour_bucket",
            "fleet_jobs",
            "fleet_queue_length",
            "fleet_dead_letters",
            "fleet_job_attempts_last_hour",
            "fleet_notifications_last_hour",
            "fleet_subscriptions",
            "fleet_sync_lag_seconds",
            "fleet_worker_heartbeat_age_seconds",
            "fleet_audit_chain_ok",
            "fleet_alert_firing",
        ):
            assert f"# TYPE {name.removesuffix('_bucket')}" in text, name
        assert 'fleet_jobs{state="dead",type="jobs.noop"} 1.0' in text
        assert 'fleet_graph_throttled_last_hour{route="/users"} 1.0' in text

    def test_elsewhere_it_needs_the_metrics_token(self, client, settings):
        settings.METRICS_TOKEN = "s3cret-scrape-token"
        assert client.get("/metrics", REMOTE_ADDR="203.0.113.5").status_code == 401
        assert (
            client.get(
                "/metrics", REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION="Bearer wrong"
            ).status_code
            == 401
        )
        scrape(client, REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")

    def test_a_scrape_costs_a_bounded_number_of_queries(
        self, client, django_assert_max_num_queries
    ):
        Job.objects.bulk_create(
            Job(job_type="jobs.noop", status=Job.Status.SUCCEEDED) for _ in range(200)
        )
        # + the alert-window figures and token health; + the approvals' two gauges (one query);
        # + the oldest due job's age
        with django_assert_max_num_queries(30):
            scrape(client)


def test_every_prometheus_rule_names_metrics_that_metrics_exports(client):
    beat()
    services.check_audit_chain()
    GraphCall.objects.create(method="GET", route="/users", status=429, throttled=True)
    exported = metric_names(scrape(client))
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in exported} | exported
    rules = yaml.safe_load((Path(settings.BASE_DIR) / "deploy/prometheus/alerts.yml").read_text())
    names_used = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            names_used |= set(re.findall(r"\bfleet_[a-z_]+", rule["expr"]))
    assert names_used and names_used <= families, names_used - families
    portal_rules = {rule.name for rule in RULES}
    named_in_rules = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            named_in_rules |= set(re.findall(r'\brule="([a-z_]+)"', rule["expr"]))
    assert named_in_rules <= portal_rules, named_in_rules - portal_rules


class TestRules:
    def test_dead_letters_fire_and_resolve_with_one_mail_each(self, settings):
        settings.ALERT_EMAIL_TO = ["oncall@example.com"]
        registry.set_value(Actor.system("tests"), "ALERT_DEAD_LETTERS", 2)
        Job.objects.bulk_create(Job(job_type="jobs.noop", status=Job.Status.DEAD) for _ in range(3))
        changes = services.evaluate_all()
        assert "dead_letters" in {event.rule for event in changes}
        alert = Alert.objects.get(rule="dead_letters")
        assert alert.state == "firing" and alert.value == 3
        assert any("Too many dead jobs" in m.subject for m in mail.outbox)
        assert "dead_letters" not in {e.rule for e in services.evaluate_all()}  # no repeat
        Job.objects.update(status=Job.Status.CANCELLED)
        services.evaluate_all()
        assert Alert.objects.get(rule="dead_letters").state == "ok"
        states = list(
            AlertEvent.objects.filter(rule="dead_letters")
            .order_by("id")
            .values_list("state", flat=True)
        )
        assert states == ["firing", "ok"]

    def test_throttling_fires_on_the_short_window_and_clears_within_minutes(self):
        # 11 429s (threshold 10): Graph throttling us is its own alert, not "Graph failing".
        GraphCall.objects.bulk_create(
            [GraphCall(method="GET", route="/users", status=200) for _ in range(15)]
            + [
                GraphCall(
                    method="GET", route="/users", status=429, throttled=True, mailbox="storm-id"
                )
                for _ in range(11)
            ]
        )
        services.evaluate_all()
        throttled = Alert.objects.get(rule="graph_throttled")
        assert throttled.state == "firing" and throttled.value == 11
        assert "Most on mailbox storm-id (11)" in throttled.message
        assert Alert.objects.get(rule="graph_error_rate").state == "ok"
        # The storm is over: within the window plus one evaluation the alert has cleared
        # (it used to count the last hour and kept firing for an hour).
        with time_machine.travel(timezone.now() + timedelta(seconds=181), tick=False):
            services.evaluate_all()
            assert Alert.objects.get(rule="graph_throttled").state == "ok"

    def test_graph_5xx_and_timeouts_fire_graph_failing_and_clear(self):
        GraphCall.objects.bulk_create(
            [GraphCall(method="GET", route="/users", status=200) for _ in range(20)]
            + [GraphCall(method="GET", route="/users", status=503) for _ in range(2)]
            + [GraphCall(method="GET", route="/users", status=None) for _ in range(2)]
        )
        services.evaluate_all()
        alert = Alert.objects.get(rule="graph_error_rate")
        assert alert.state == "firing" and alert.value == round(100 * 4 / 24, 2)
        assert "no answer" in alert.message
        with time_machine.travel(timezone.now() + timedelta(seconds=181), tick=False):
            services.evaluate_all()
            assert Alert.objects.get(rule="graph_error_rate").state == "ok"

    def test_the_window_is_a_setting(self, settings):
        settings.ALERT_WINDOW_SECONDS = 30
        GraphCall.objects.bulk_create(
            GraphCall(method="GET", route="/x", status=503) for _ in range(5)
        )
        services.evaluate_all()
        assert Alert.objects.get(rule="graph_error_rate").state == "firing"
        with time_machine.travel(timezone.now() + timedelta(seconds=31), tick=False):
            services.evaluate_all()
            assert Alert.objects.get(rule="graph_error_rate").state == "ok"

    def test_refusals_and_throttling_are_not_graph_failing(self):
        GraphCall.objects.bulk_create(
            [GraphCall(method="GET", route="/x", status=404) for _ in range(10)]
            + [GraphCall(method="GET", route="/x", status=429, throttled=True) for _ in range(5)]
        )
        services.evaluate_all()
        assert Alert.objects.get(rule="graph_error_rate").state == "ok"

    def test_old_calls_do_not_count(self):
        old = timezone.now() - timedelta(minutes=4)
        GraphCall.objects.bulk_create(
            GraphCall(method="GET", route="/x", status=503, created_at=old) for _ in range(50)
        )
        services.evaluate_all()
        assert Alert.objects.get(rule="graph_error_rate").state == "ok"

    def test_every_alert_links_to_the_page_that_fixes_it(self, client):
        for rule in RULES:
            url = str(rule.link)
            assert url.startswith("/"), rule.name
            path = url.split("#")[0].split("?")[0]
            assert resolve(path).namespace == "console", rule.name

    def test_worker_down_and_audit_chain(self):
        services.check_audit_chain()
        services.evaluate_all()
        assert Alert.objects.get(rule="worker_down").state == "firing"
        assert Alert.objects.get(rule="audit_chain_broken").state == "ok"
        beat()
        services.evaluate_all()
        assert Alert.objects.get(rule="worker_down").state == "ok"

    def test_a_snoozed_alert_fires_without_mail(self, settings):
        settings.ALERT_EMAIL_TO = ["oncall@example.com"]
        services.evaluate_all()
        Alert.objects.filter(rule="worker_down").update(
            state="ok", snoozed_until=timezone.now() + timedelta(hours=1)
        )
        mail.outbox.clear()
        services.evaluate_all()
        assert Alert.objects.get(rule="worker_down").state == "firing"
        assert not [m for m in mail.outbox if "No worker" in m.subject]


class TestOperatorActions:
    def test_support_acknowledges_and_snoozes_audited(self, sam_support):
        services.evaluate_all()  # worker_down fires: no heartbeat yet
        actor = Actor(kind="user", name="sam-support", role=role_of(sam_support), user=sam_support)
        services.acknowledge(actor, "worker_down")
        services.snooze(actor, "worker_down", 30, "deploying")
        alert = Alert.objects.get(rule="worker_down")
        assert alert.acknowledged_by == "sam-support" and alert.snoozed_until
        actions = set(AuditEvent.objects.values_list("action", flat=True))
        assert {"alert.acknowledge", "alert.snooze"} <= actions

    def test_viewers_cannot_and_bad_input_is_explained(self, vera_viewer, sam_support):
        services.evaluate_all()
        viewer = Actor(kind="user", name="v", role="viewer", user=vera_viewer)
        with pytest.raises(PermissionDenied):
            services.acknowledge(viewer, "worker_down")
        support = Actor(kind="user", name="s", role="support", user=sam_support)
        with pytest.raises(services.AlertError, match="between 1 minute"):
            services.snooze(support, "worker_down", 0)
        with pytest.raises(services.AlertError, match="no alert"):
            services.acknowledge(support, "nope")


class TestTeamsNotifications:
    def test_without_a_connected_sender_alerts_go_by_mail(self, settings):
        settings.ALERT_EMAIL_TO = ["oncall@example.com"]
        settings.ALERT_TEAMS_CHAT_ID = "19:ops@thread.v2"
        registry.set_value(Actor.system("tests"), "ALERT_DEAD_LETTERS", 1)
        Job.objects.bulk_create(Job(job_type="jobs.noop", status=Job.Status.DEAD) for _ in range(2))
        services.evaluate_all()
        event = AlertEvent.objects.get(rule="dead_letters")
        assert event.notified == "e-mail: oncall@example.com"

    def test_with_a_sender_alerts_are_posted_to_the_chat(self, settings):
        settings.ALERT_EMAIL_TO = ["oncall@example.com"]
        settings.ALERT_TEAMS_CHAT_ID = "19:ops@thread.v2"
        DelegatedAccount.objects.create(upn="fleet.bot@example.com", token_cache_encrypted="x")
        registry.set_value(Actor.system("tests"), "ALERT_DEAD_LETTERS", 1)
        Job.objects.bulk_create(Job(job_type="jobs.noop", status=Job.Status.DEAD) for _ in range(2))
        mail.outbox.clear()
        services.evaluate_all()
        event = AlertEvent.objects.get(rule="dead_letters")
        assert event.notified == "Teams chat 19:ops@thread.v2"
        assert OutboundMessage.objects.filter(
            chat_id="19:ops@thread.v2", body__contains="Too many dead jobs"
        ).exists()
        assert not [m for m in mail.outbox if "dead jobs" in m.subject]
        # Alerts about the Teams path itself (no worker to send it) also go by mail.
        worker = AlertEvent.objects.get(rule="worker_down")
        assert worker.notified == "Teams chat 19:ops@thread.v2; e-mail: oncall@example.com"
