"""Times in tables: the date, the year when it is not this year, the zone; relative times with
the exact time on hover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from portal.console.templatetags.labels import ago, when


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
