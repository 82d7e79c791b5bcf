"""Screens show human words: audited actions, event types, alerts, settings and sync states
have labels (the machine name in small print, where a search needs it), and numbers and
nouns agree."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from integrations.microsoft.models import MonitoredUser, Subscription, SyncState
from portal.access.actors import Actor
from portal.alerts import rules
from portal.alerts.models import AlertEvent
from portal.audit.services import record
from portal.events.models import EventEndpoint
from portal.jobs.models import Job
from portal.lib.crypto import encrypt

pytestmark = pytest.mark.django_db


def text(client, url: str) -> str:
    html = client.get(url).content.decode()
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_audited_actions_read_as_words_with_the_name_in_small_print(client, ada_admin):
    record("job.retry", actor=Actor.system("tests"), target_type="job", target_id="1")
    record(
        "settings.change",
        actor=Actor.system("tests"),
        target_type="setting",
        target_id="ALERT_QUEUE_LENGTH",
    )
    record(
        "alert.snooze", actor=Actor.system("tests"), target_type="alert", target_id="queue_length"
    )
    client.force_login(ada_admin)
    audit = text(client, reverse("console:audit"))
    assert "Retried a job job.retry" in audit
    assert "Changed a setting settings.change" in audit
    assert "setting “Alert: queue length”" in audit
    queue_title = next(str(r.title) for r in rules.RULES if r.name == "queue_length")
    assert f"alert “{queue_title}”" in audit
    assert "Retried a job job.retry" in text(client, reverse("console:dashboard"))


def test_alert_history_names_the_alert(client, ada_admin):
    AlertEvent.objects.create(rule="queue_length", state="firing", message="x")
    client.force_login(ada_admin)
    queue_title = next(str(r.title) for r in rules.RULES if r.name == "queue_length")
    assert f"{queue_title} queue_length" in text(client, reverse("console:alerts"))


def test_event_types_read_as_words(client, ada_admin):
    EventEndpoint.objects.create(
        url="https://fleet.example.test/hook",
        event_types=["mail.received", "message.failed"],
        secret_encrypted=encrypt("whsec_test"),
    )
    client.force_login(ada_admin)
    page = text(client, reverse("console:event_endpoints"))
    assert "Mail received mail.received" in page and "Message failed message.failed" in page
    assert "Mail received (mail.received)" in page  # the form's choices


def test_sync_states_read_user_and_mail(client, ada_admin):
    user = MonitoredUser.objects.create(upn="lena.ortiz@example.test", graph_id="g1")
    state = SyncState.objects.create(monitored_user=user, kind="messages")
    Subscription.objects.create(
        monitored_user=user, kind="chatMessages", resource="/chats", graph_id="sub-1"
    )
    record(
        "sync.reset", actor=Actor.system("tests"), target_type="sync_state", target_id=str(state.pk)
    )
    # A second hit for the search below, so that it lists rather than goes to the one hit.
    record("tests.touch", actor=Actor.system("tests"), target_type="url", target_id="sub-1")
    client.force_login(ada_admin)
    assert "lena.ortiz@example.test · mail" in text(client, reverse("console:audit"))
    found = text(client, reverse("console:search") + "?q=sub-1")
    assert "lena.ortiz@example.test · Teams chats" in found
    subscription = Subscription.objects.get(graph_id="sub-1")
    confirm = text(client, reverse("console:subscription_recreate", args=[subscription.pk]))
    assert "lena.ortiz@example.test · Teams chats" in confirm


def test_numbers_and_nouns_agree(client, vera_viewer):
    Job.objects.create(job_type="jobs.noop", status="dead")
    verdict = next(r for r in rules.RULES if r.name == "dead_letters").evaluate()
    assert verdict.message.startswith("1 job is in the dead-letter queue")
    Job.objects.create(job_type="jobs.noop")
    client.force_login(vera_viewer)
    assert "1 job due, not started" in text(client, reverse("console:dashboard"))
