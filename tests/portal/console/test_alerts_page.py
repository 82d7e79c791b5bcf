import pytest
from django.urls import reverse

from portal.alerts import services
from portal.alerts.models import Alert
from portal.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_everyone_sees_the_rules_firing_first(client, vera_viewer):
    services.evaluate_all()  # no worker heartbeat: worker_down fires
    client.force_login(vera_viewer)
    response = client.get(reverse("console:alerts"))
    assert response.status_code == 200
    assert response.context["rows"][0].rule.name == "worker_down"
    assert b"Acknowledge" not in response.content


def test_support_acknowledges_and_snoozes(client, sam_support):
    services.evaluate_all()
    client.force_login(sam_support)
    url = reverse("console:alert_action", args=["worker_down"])
    response = client.post(url, {"action": "acknowledge"}, follow=True)
    assert b"worker_down acknowledged" in response.content
    client.post(url, {"action": "snooze", "minutes": "30"})
    alert = Alert.objects.get(rule="worker_down")
    assert alert.acknowledged_by == "sam-support" and alert.snoozed_until
    assert AuditEvent.objects.filter(action="alert.snooze", actor_name="sam-support").exists()


def test_bad_snoozes_and_unknown_alerts_are_explained(client, sam_support):
    services.evaluate_all()
    client.force_login(sam_support)
    for minutes, message in (("x", b"Choose how long"), ("99999", b"between 1 minute")):
        response = client.post(
            reverse("console:alert_action", args=["worker_down"]),
            {"action": "snooze", "minutes": minutes},
            follow=True,
        )
        assert message in response.content
    response = client.post(
        reverse("console:alert_action", args=["nope"]), {"action": "acknowledge"}, follow=True
    )
    assert b"no alert" in response.content


def test_viewers_cannot_acknowledge(client, vera_viewer):
    services.evaluate_all()
    client.force_login(vera_viewer)
    response = client.post(
        reverse("console:alert_action", args=["worker_down"]), {"action": "acknowledge"}
    )
    assert response.status_code == 403


def test_each_alert_shows_since_last_evaluation_value_and_a_link_to_its_fix(client, ada_admin):
    services.evaluate_all()  # no worker heartbeat: worker_down fires
    client.force_login(ada_admin)
    response = client.get(reverse("console:alerts"))
    row = response.context["rows"][0]
    assert row.rule.name == "worker_down"
    assert row.fix_url == reverse("console:jobs") + "?status=pending"
    body = response.content.decode()
    alert = Alert.objects.get(rule="worker_down")
    assert f"{alert.firing_since:%Y-%m-%d %H:%M:%S}" in body
    assert f'evaluated <time datetime="{alert.last_evaluated_at.isoformat()}' in body
    assert f'<a class="fix-link" href="{row.fix_url}">' in body


def test_a_page_evaluates_the_rules_when_no_worker_has_for_minutes(client, vera_viewer):
    # Nobody evaluated (no worker runs): the page someone is looking at does.
    client.force_login(vera_viewer)
    client.get(reverse("console:dashboard"))
    assert Alert.objects.get(rule="worker_down").state == "firing"
