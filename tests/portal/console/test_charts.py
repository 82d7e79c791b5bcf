"""The dashboard's charts: buckets lined up with the viewer's clock, ticks at round times of it
(DST included), the range choice, and operator actions marked with a link to their audit row."""

from __future__ import annotations

import itertools
import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from portal.access.actors import Actor
from portal.alerts.models import MetricSample
from portal.audit.services import record
from portal.console.charts import (
    DEFAULT_RANGE,
    RANGES,
    bucket_start,
    chart_range,
    dashboard_charts,
    nice_ceiling,
    tick_spacing,
    time_ticks,
)
from portal.console.preferences import SESSION_KEY
from portal.jobs.models import Job

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
KATHMANDU = zoneinfo.ZoneInfo("Asia/Kathmandu")  # UTC+05:45
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def sample(at: datetime, ok: int = 1, failed: int = 0, throttled: int = 0, queue: int = 0):
    return MetricSample.objects.create(
        taken_at=at,
        queue_length=queue,
        dead=0,
        calls_ok=ok,
        calls_failed=failed,
        calls_throttled=throttled,
    )


# --- buckets and ticks (no database) ---------------------------------------------------------


def test_buckets_line_up_with_the_viewers_wall_clock():
    now = utc(2026, 12, 7, 14, 3, 20)
    assert bucket_start(now, timedelta(minutes=1), UTC) == utc(2026, 12, 7, 14, 3)
    assert bucket_start(now, timedelta(hours=1), BERLIN) == utc(2026, 12, 7, 14, 0)
    # 14:03 UTC is 19:48 in Kathmandu: its 10 minutes began at 19:40 there, 13:55 UTC.
    assert bucket_start(now, timedelta(minutes=10), KATHMANDU) == utc(2026, 12, 7, 13, 55)
    assert bucket_start(now, timedelta(hours=1), KATHMANDU) == utc(2026, 12, 7, 13, 15)


def test_ranges_and_their_buckets():
    assert {key: (r.span, r.bucket) for key, r in RANGES.items()} == {
        "1h": (timedelta(hours=1), timedelta(minutes=1)),
        "6h": (timedelta(hours=6), timedelta(minutes=1)),
        "24h": (timedelta(hours=24), timedelta(minutes=10)),
        "7d": (timedelta(days=7), timedelta(hours=1)),
    }
    assert chart_range(None).key == chart_range("2y").key == DEFAULT_RANGE == "6h"


def test_tick_spacing_gives_a_handful_of_labels_per_range():
    assert [tick_spacing(r.span) for r in RANGES.values()] == [
        timedelta(minutes=10),
        timedelta(hours=1),
        timedelta(hours=3),
        timedelta(days=1),
    ]


def test_ticks_are_round_times_of_the_viewers_clock_and_leave_room_for_now():
    end = utc(2026, 12, 7, 14, 3)  # 15:03 in Berlin
    ticks = time_ticks(end - timedelta(hours=6), end, BERLIN)
    assert [t.label for t in ticks] == ["10:00", "11:00", "12:00", "13:00", "14:00"]
    assert ticks[0].at == utc(2026, 12, 7, 9, 0)
    # 09:03 → 15:03: 10:00 Berlin is 57 minutes in; 15:00 is 3 minutes before now, and the
    # "now" label at the right end needs the room.
    assert ticks[0].position == pytest.approx(100 * 57 / 360, abs=0.001)
    later = utc(2026, 12, 7, 14, 40)
    assert time_ticks(later - timedelta(hours=6), later, BERLIN)[-1].label == "15:00"


def test_midnight_is_labelled_with_the_date_and_a_week_has_one_tick_a_day():
    end = utc(2026, 12, 7, 20, 0)
    day = time_ticks(end - timedelta(hours=24), end, BERLIN)
    # 21:00 the day before → 21:00 in Berlin, every 3 hours; the second 21:00 is "now".
    labels = ["21:00", "Mon 7", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00"]
    assert [t.label for t in day] == labels
    assert (day[0].position, day[0].anchor) == (0, "start")
    week = time_ticks(end - timedelta(days=7), end, BERLIN)
    assert [t.label for t in week] == [
        "Tue 1",
        "Wed 2",
        "Thu 3",
        "Fri 4",
        "Sat 5",
        "Sun 6",
        "Mon 7",
    ]
    assert week[0].at == utc(2026, 11, 30, 23, 0)  # Berlin's midnight, not UTC's


def test_ticks_across_the_spring_dst_change_skip_the_missing_hour_and_name_the_zone():
    # Berlin, 29 March 2026: 02:00 CET became 03:00 CEST (01:00 UTC).
    end = utc(2026, 3, 29, 3, 30)
    ticks = time_ticks(end - timedelta(hours=6), end, BERLIN)
    assert [t.label for t in ticks] == ["23:00", "Sun 29", "01:00", "03:00 CEST", "04:00"]
    # Equally spaced in real time: an hour between 01:00 CET and 03:00 CEST.
    assert ticks[3].at - ticks[2].at == timedelta(hours=1)


def test_ticks_across_the_autumn_dst_change_show_the_repeated_hour_twice():
    # New York, 1 November 2026: 02:00 EDT became 01:00 EST (06:00 UTC).
    end = utc(2026, 11, 1, 9, 30)
    ticks = time_ticks(end - timedelta(hours=6), end, NEW_YORK)
    # 23:30 EDT → 04:30 EST; 04:00 is too close to "now" to be labelled.
    assert [t.label for t in ticks] == ["Sun 1", "01:00", "01:00 EST", "02:00", "03:00"]
    labels = [t.label for t in ticks]
    assert labels.count("01:00") == 1 and "01:00 EST" in labels
    steps = {b.at - a.at for a, b in itertools.pairwise(ticks)}
    assert steps == {timedelta(hours=1)}  # never 0 or 2 hours between neighbours


def test_a_day_across_a_dst_change_has_its_midnights_25_hours_apart():
    end = utc(2026, 10, 27, 12, 0)  # Berlin fell back on 25 October
    week = time_ticks(end - timedelta(days=7), end, BERLIN)
    by_label = {t.label: t.at for t in week}
    # Midnight after the change names the zone it is in now.
    assert by_label["Mon 26 CET"] - by_label["Sun 25"] == timedelta(hours=25)
    assert by_label["Sun 25"] - by_label["Sat 24"] == timedelta(hours=24)


def test_the_scale_ends_on_a_round_number():
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 10, 11, 87, 120, 999)] == [
        1,
        1,
        5,
        10,
        10,
        20,
        100,
        200,
        1000,
    ]


# --- the charts from the database -----------------------------------------------------------

NOW = utc(2026, 12, 7, 14, 3, 20)


@pytest.mark.django_db
def test_one_hour_is_sixty_minutes_ending_now(vera_viewer):
    sample(utc(2026, 12, 7, 14, 3, 5), ok=8, failed=2, throttled=1, queue=12)
    sample(utc(2026, 12, 7, 13, 30, 10), ok=50, queue=40)
    sample(utc(2026, 12, 7, 13, 3, 10), ok=999)  # before the first whole minute: not shown
    charts = dashboard_charts("1h", vera_viewer, now=NOW, zone=UTC)
    bars = charts["bars"]
    # The 59 whole minutes after 13:03:20 and the current minute, drawn up to now.
    assert len(bars) == 60
    assert bars[0].bucket.start == utc(2026, 12, 7, 13, 4)
    current = bars[-1]
    assert current.in_progress and current.bucket.start == utc(2026, 12, 7, 14, 3)
    assert (current.bucket.calls_ok, current.bucket.calls_failed) == (8, 2)
    assert current.x + current.width <= 100
    busiest = next(b for b in bars if b.bucket.calls_ok == 50)
    assert busiest.label == "13:30" and busiest.ok_height == 100  # the scale's top is 50
    assert charts["tops"] == {"calls": 50, "throttled": 1, "queue": 50}
    assert charts["summary"]["ok"] == 58 and charts["summary"]["busiest_label"] == "13:30"
    # Only sampled minutes are drawn (no sample is not zero): one sub-path a bar, each series
    # one path; the current minute's 2 failed calls (of a scale of 50) stand 40 of 1,000.
    paths = charts["paths"]
    assert paths["ok"].count("z") == 2 and paths["queue"].count("z") == 2
    # At 99.44 % of the width, 0.44 % wide (80 % of the 20 seconds of it so far).
    assert paths["failed"] == "M9944 1000h44v-40h-44z"
    assert paths["queue"].startswith(f"M{round(busiest.x * 100)} 1000h")
    assert f"v-{round(busiest.queue_height * 10)}h" in paths["queue"]


@pytest.mark.django_db
def test_seven_days_read_the_ten_minute_rows_hour_by_hour(vera_viewer):
    folded = MetricSample.objects.create(
        taken_at=utc(2026, 12, 3, 9, 10),
        span_minutes=10,
        queue_length=30,
        dead=0,
        calls_ok=600,
        calls_failed=5,
        calls_throttled=0,
    )
    sample(utc(2026, 12, 3, 9, 40), ok=7)
    charts = dashboard_charts("7d", vera_viewer, now=NOW, zone=BERLIN)
    hour = next(b for b in charts["bars"] if b.bucket.start == folded.taken_at.replace(minute=0))
    assert (hour.bucket.calls_ok, hour.bucket.queue_peak, hour.bucket.samples) == (607, 30, 2)
    assert hour.label == "Thu 3 Dec 10:00"  # in Berlin
    assert len(charts["bars"]) == 7 * 24  # the current hour included, the first part-hour not


@pytest.mark.django_db
def test_operator_actions_are_marked_with_who_did_what_and_a_link_to_the_audit_row(
    otto_operator, vera_viewer, ada_admin
):
    job = Job.objects.create(job_type="graph.sync_delta", status=Job.Status.PENDING)
    actor = Actor(kind="user", name="otto-operator", role="operator", user=otto_operator)
    retry = record("job.retry", actor=actor, target_type="job", target_id=job.pk)
    record("auth.login", actor=actor)  # signing in changes nothing
    record("job.retry", actor=actor, outcome="denied", target_type="job", target_id="6")
    record("jobs.pause", actor=Actor.system("scheduler"))  # not an operator
    charts = dashboard_charts("1h", ada_admin)
    (marker,) = charts["markers"]
    assert marker["who"] == "otto-operator (operator)"
    assert marker["what"] == f"retried a job: Job {job.pk} · Delta sync"
    assert marker["href"] == f"/audit/?before={retry.pk + 1}#audit-event-{retry.pk}"
    assert 0 <= marker["x"] <= 100
    # Who may not read the audit log does not see it on the dashboard either.
    assert dashboard_charts("1h", vera_viewer)["markers"] == []


# --- the page --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_range_is_chosen_by_a_link_and_kept_in_the_url(client, ada_admin):
    client.force_login(ada_admin)
    page = client.get(reverse("console:dashboard"), {"range": "7d"})
    html = page.content.decode()
    assert page.context["charts"]["range"].key == "7d"
    # Every choice is a real link (it works without script) that htmx swaps in place and
    # pushes into the address bar; the live refresh asks for the same range.
    for key in RANGES:
        link = re.search(rf'<a id="range-{key}" [^>]*>', html).group(0)
        assert f'href="/?range={key}"' in link and f'hx-get="/?range={key}"' in link
        assert 'hx-target="#health"' in link and 'hx-push-url="true"' in link
    assert 'aria-current="true">7 d<' in html
    assert '<div id="health" hx-get="/?range=7d&amp;drawn=7d+' in html
    assert "the last 7 days" in html


@pytest.mark.django_db
def test_htmx_gets_the_fragment_and_the_answer_varies_on_it(client, ada_admin):
    client.force_login(ada_admin)
    fragment = client.get(reverse("console:dashboard"), {"range": "1h"}, HTTP_HX_REQUEST="true")
    html = fragment.content.decode()
    assert html.lstrip().startswith('<div id="health" hx-get="/?range=1h&amp;drawn=1h+')
    assert "<h1>" not in html and "the last hour" in html
    assert "HX-Request" in fragment["Vary"]
    page = client.get(reverse("console:dashboard"), {"range": "1h"})
    assert "<h1>" in page.content.decode() and "HX-Request" in page["Vary"]


@pytest.mark.django_db
def test_an_unknown_range_shows_the_default_and_the_default_keeps_a_plain_url(client, ada_admin):
    client.force_login(ada_admin)
    html = client.get(reverse("console:dashboard"), {"range": "forever"}).content.decode()
    assert 'aria-current="true">6 h<' in html
    assert '<div id="health" hx-get="/?drawn=6h+' in html


@pytest.mark.django_db
def test_chart_times_are_in_the_viewers_time_zone(client, ada_admin):
    client.force_login(ada_admin)
    session = client.session
    session[SESSION_KEY] = "Asia/Kathmandu"
    session.save()
    html = client.get(reverse("console:dashboard"), {"range": "6h"}).content.decode()
    assert "times in Asia/Kathmandu (+0545)" in html


@pytest.mark.django_db
def test_a_range_longer_than_the_samples_are_kept_says_so(client, ada_admin, settings):
    settings.METRIC_SAMPLE_RETENTION_DAYS = 2
    client.force_login(ada_admin)
    html = client.get(reverse("console:dashboard"), {"range": "7d"}).content.decode()
    assert "Samples are kept 2 days: the start of this range has none." in html
    html = client.get(reverse("console:dashboard"), {"range": "24h"}).content.decode()
    assert "Samples are kept" not in html


@pytest.mark.django_db
def test_an_action_without_a_target_reads_as_the_action_alone(otto_operator):
    actor = Actor(kind="user", name="otto-operator", role="operator", user=otto_operator)
    record("jobs.pause", actor=actor, target_type="job_queue")
    (marker,) = dashboard_charts("1h", otto_operator)["markers"]
    assert marker["what"] == "paused the job queue"


@pytest.mark.django_db
def test_the_live_refresh_keeps_the_charts_until_the_minute_or_the_samples_change(
    client, ada_admin
):
    client.force_login(ada_admin)
    sample(timezone.now() - timedelta(seconds=30), ok=5)

    def drawn(html: str) -> str:
        refresh = re.search(r'<div id="health" hx-get="([^"]*)"', html).group(1)
        return parse_qs(urlsplit(unescape(refresh)).query)["drawn"][0]

    def refresh(**query: str) -> str:
        return client.get("/", query, HTTP_HX_REQUEST="true").content.decode()

    with time_machine.travel(timezone.now().replace(second=10), tick=False):
        html = refresh(range="1h")
        stamp = drawn(html)
        assert '<section id="charts" class="card charts-panel"' in html
        # The same minute, range, zone and samples: htmx keeps the charts the page has.
        kept = refresh(range="1h", drawn=stamp)
        assert '<section id="charts" hx-preserve="true"></section>' in kept
        assert "timechart" not in kept and "charts-title" not in kept
        assert drawn(kept) == stamp
        # Another range (a link under the old stamp) draws.
        assert "timechart" in refresh(range="6h", drawn=stamp)
        sample(timezone.now(), ok=7)  # a new sample: drawn anew
        assert "timechart" in refresh(range="1h", drawn=stamp)
    with time_machine.travel(timezone.now().replace(second=10) + timedelta(minutes=1)):
        assert "timechart" in refresh(range="1h", drawn=stamp)  # the next minute
