"""Incident drills: cause a runbook incident against the emulator with real worker processes,
then check that the right alert fires, the dashboard shows it, its link leads to the action
that fixes it, and that it clears after the fix.

The workers are real `manage.py qcluster` processes on the test database, pointed at the
emulator and at this test's receiver (`live_server`). What a schedule would start is started
by calling the schedule's entry here; alert windows are moved with time-machine in this
process only (the rules are evaluated here, as the alerts schedule would).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from integrations.graph import auth
from integrations.graph_emulator.pytest_plugin import emulator, graph_emulator  # noqa: F401
from integrations.graph_emulator.testing import RunningEmulator
from portal.alerts.models import Alert
from portal.alerts.rules import RULES, Rule
from portal.alerts.services import evaluate_all
from tests.integrations.microsoft.conftest import (  # noqa: F401
    _fresh_process_state,
    drain,
    emulator_user,
    graph_settings,
    monitored,
    webhook_settings,
)
from tests.integrations.microsoft.webhook_support import wait_for

__all__ = ["alert_state", "rule", "wait_for"]


@pytest.fixture
def graph_worker(
    webhook_settings: Any, emulator: RunningEmulator, live_server: Any, qcluster: Any
) -> Callable[..., Any]:
    """Start a real worker cluster that talks to the emulator and knows this receiver."""
    auth.app_token()  # bootstrap the credential store once, in this process

    def start(**extra: str) -> Any:
        return qcluster(
            workers=2,
            MICROSOFT_AUTHORITY_HOST=emulator.authority_host,
            MICROSOFT_GRAPH_URL=emulator.graph_url,
            MICROSOFT_TENANT_ID=emulator.tenant_id,
            MICROSOFT_CLIENT_ID=emulator.client_id,
            MICROSOFT_CLIENT_SECRET=emulator.client_secret,
            MICROSOFT_CA_BUNDLE=emulator.ca_path,
            MICROSOFT_ALLOW_EMULATOR="true",
            PUBLIC_BASE_URL=live_server.url,
            SYNC_SPREAD_SECONDS="0",
            GRAPH_MAX_IN_PROCESS_WAIT_SECONDS="5",
            GRAPH_BACKOFF_BASE_SECONDS="0.05",
            LOG_LEVEL="WARNING",
            **extra,
        )

    return start


def rule(name: str) -> Rule:
    return next(r for r in RULES if r.name == name)


def alert_state(name: str) -> str:
    """Evaluate every rule (as the alerts schedule does) and return this one's state."""
    evaluate_all()
    return Alert.objects.get(rule=name).state
