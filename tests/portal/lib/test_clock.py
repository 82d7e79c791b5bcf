"""portal.lib.clock: real time, unless a benchmark against the emulator moves it with a file."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from integrations.microsoft.models import Subscription
from integrations.microsoft.subscriptions import renewal_due
from portal.lib import clock


def test_it_is_real_time_without_the_setting(settings):
    settings.SIMULATED_CLOCK_FILE = ""
    before = timezone.now()
    assert before <= clock.now() <= timezone.now()


def test_it_adds_the_file_offset_read_at_call_time(settings, tmp_path):
    offset = tmp_path / "offset"
    settings.SIMULATED_CLOCK_FILE = str(offset)
    assert abs((clock.now() - timezone.now()).total_seconds()) < 1  # no file yet: no offset
    offset.write_text("3600")
    assert abs((clock.now() - timezone.now()).total_seconds() - 3600) < 1
    replacement = tmp_path / "offset.tmp"
    replacement.write_text("7200.5")
    os.replace(replacement, offset)  # how bench/soak moves it: an atomic replace
    assert abs((clock.now() - timezone.now()).total_seconds() - 7200.5) < 1


def test_renewal_falls_due_on_the_moved_clock(settings, tmp_path):
    offset = tmp_path / "offset"
    settings.SIMULATED_CLOCK_FILE = str(offset)
    started = timezone.now()
    sub = Subscription(lifetime_started_at=started, expiration=started + timedelta(hours=2))
    assert not renewal_due(sub)
    offset.write_text(str(65 * 60))  # past half of the two hours
    assert renewal_due(sub)


def test_settings_refuse_it_against_real_graph():
    env = dict(
        os.environ,
        PORTAL_IGNORE_DOTENV="1",
        SECRET_KEY="s" * 60,
        DEBUG="false",
        FIELD_ENCRYPTION_KEYS="Z7v0bqVXc3L8RJd2f5m9gQq5bUq1ZkBl3sRr8uH1o2U=",
        AUDIT_CHAIN_KEY="k" * 40,
        DJANGO_SETTINGS_MODULE="portal.settings",
        SIMULATED_CLOCK_FILE="/tmp/offset",
        MICROSOFT_GRAPH_URL="https://graph.microsoft.com/v1.0",
        MICROSOFT_AUTHORITY_HOST="https://login.microsoftonline.com",
    )
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('loaded')"],
        env=env,
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SIMULATED_CLOCK_FILE is only for benchmarks" in result.stderr
