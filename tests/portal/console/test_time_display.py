"""Times in tables: the date, the year when it is not this year, the zone; relative times with
the exact time on hover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.console import preferences
from portal.console.templatetags.labels import ago, when
from portal.jobs.models import Job


@pytest.fixture
def now(time_machine):
    moment = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    time_machine.move_to(moment, tick=False)
    return moment


def test_an_absolute_time_has_its_date_zone_and_year_when_not_this_year(now):
    assert ">7 Dec 11:58:03 UTC</time>" in when(now - timedelta(minutes=1, seconds=57))
    assert ">30 Dec 2025 09:00:00 UTC</time>" in when(datetime(2025, 12, 30, 9, tzinfo=UTC))
    assert 'title="Monday 2026-12-07 12:00:00 UTC"' in when(now)
    assert when(None) == ""


def test_a_time_zone_shows_in_its_own_words(now):
    with timezone.override("Europe/Berlin"):
        assert ">7 Dec 13:00:00 CET</time>" in when(now)


def test_relative_times_never_say_zero_minutes(now):
    assert ">just now</time>" in ago(now - timedelta(seconds=20))
    assert ">4 min ago</time>" in ago(now - timedelta(minutes=4, seconds=30))
    assert ">3 h ago</time>" in ago(now - timedelta(hours=3, minutes=59))
    assert ">in 2 d</time>" in ago(now + timedelta(days=2, hours=1))
    assert 'title="2026-12-07 11:56:00 UTC"' in ago(now - timedelta(minutes=4))


@pytest.mark.django_db
def test_each_person_chooses_the_time_zone_times_are_shown_in(client, vera_viewer, now):
    job = Job.objects.create(job_type="jobs.noop")
    Job.objects.filter(pk=job.pk).update(created_at=now)
    client.force_login(vera_viewer)
    assert ">7 Dec 12:00:00 UTC</time>" in client.get(f"/jobs/{job.pk}/").content.decode()
    page = client.get("/preferences/")
    assert page.status_code == 200 and b'<option value="UTC" selected>' in page.content
    refused = client.post("/preferences/", {"time_zone": "Mars/Olympus_Mons"})
    assert refused.status_code == 400 and b"Select a valid choice" in refused.content
    client.post("/preferences/", {"time_zone": "Europe/Berlin"})
    assert ">7 Dec 13:00:00 CET</time>" in client.get(f"/jobs/{job.pk}/").content.decode()
    event = AuditEvent.objects.get(action="preference.time_zone")
    assert event.params == {"before": "UTC", "after": "Europe/Berlin"}
    # Another person still sees UTC.
    assert preferences.time_zone_of(vera_viewer) == "Europe/Berlin"
    client.logout()
    client.force_login(get_user_model().objects.create_user("other", password="x" * 20))
    assert preferences.time_zone_of(get_user_model().objects.get(username="other")) == "UTC"
