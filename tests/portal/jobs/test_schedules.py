"""Every schedule the code relies on is registered with django-q2 (by migrate)."""

from __future__ import annotations

import ast
import pydoc
from pathlib import Path

import pytest
from django.conf import settings
from django_q.models import Schedule

from portal.jobs.schedules import SCHEDULES, ensure_schedules

pytestmark = pytest.mark.django_db

# name -> (function, minutes). Adding, removing or retiming a schedule changes this list.
EXPECTED = {
    "jobs.release_due": ("portal.jobs.tasks.release_due_jobs", 1),
    "jobs.watchdog": ("portal.jobs.tasks.requeue_lost_jobs", 1),
    "jobs.heartbeat": ("portal.jobs.tasks.heartbeat", 1),
    "retention.prune": ("portal.jobs.tasks.prune_expired_records", 60),
    "graph.webhooks.maintain": ("integrations.microsoft.subscriptions.enqueue_maintenance", 5),
    "graph.probe": ("integrations.microsoft.probe.enqueue_tick", 1),
    "graph.sync.interval": ("integrations.microsoft.sync.enqueue_interval_syncs", 1),
    "graph.credentials.retire_grace": ("integrations.microsoft.tasks.retire_expired_grace", 5),
    "graph.inbox.sweep": ("integrations.microsoft.inbox.sweep", 1),
    "alerts.evaluate": ("portal.alerts.tasks.evaluate_alerts", 1),
    "graph.token.check": ("portal.alerts.token_health.check", 1),
    "audit.verify_chain": ("portal.alerts.tasks.check_audit_chain", 60),
    "alerts.downsample_samples": ("portal.alerts.tasks.downsample_samples", 10),
    "audit.stream": ("portal.audit.tasks.ship_audit_stream", 1),
    "access.recheck_entra": ("portal.access.tasks.recheck_entra_accounts", 15),
    "events.fan_out": ("portal.events.tasks.fan_out", 1),
}


def test_migrate_registers_exactly_the_codes_schedules():
    registered = {
        row.name: (row.func, row.minutes)
        for row in Schedule.objects.filter(schedule_type=Schedule.MINUTES, repeats=-1)
    }
    assert registered == EXPECTED
    assert dict(SCHEDULES) == EXPECTED
    assert Schedule.objects.count() == len(EXPECTED)


def test_every_scheduled_function_runs_on_an_empty_database():
    for func, _ in EXPECTED.values():
        target = pydoc.locate(func)  # how django-q2 resolves a schedule's func
        assert callable(target), func
        target()


def schedule_entries() -> set[str]:
    """Functions whose docstring calls them a schedule entry, anywhere in the code."""
    found = set()
    for package in ("portal", "integrations"):
        for path in (Path(settings.BASE_DIR) / package).rglob("*.py"):
            module = ".".join(path.relative_to(settings.BASE_DIR).with_suffix("").parts)
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.FunctionDef) and (ast.get_docstring(node) or "").startswith(
                    "Schedule entry"
                ):
                    found.add(f"{module}.{node.name}")
    return found


def test_every_function_documented_as_a_schedule_entry_is_scheduled():
    entries = schedule_entries()
    assert "integrations.microsoft.tasks.retire_expired_grace" in entries
    assert entries <= {func for func, _ in EXPECTED.values()}


def test_a_schedule_the_code_no_longer_has_is_dropped_on_migrate():
    # It would call a function that is gone, every time it came round.
    Schedule.objects.create(
        name="jobs.prune",
        func="portal.jobs.tasks.prune_succeeded_jobs",
        schedule_type=Schedule.MINUTES,
        minutes=60,
        repeats=-1,
    )
    ensure_schedules()
    assert not Schedule.objects.filter(name="jobs.prune").exists()
    assert Schedule.objects.count() == len(EXPECTED)
