"""The integration checklist's queue check (verify_integration), judged by the alert rules
themselves (same figures, same runtime thresholds), so the checklist and the dashboard never
disagree. The alerts add it to the checklist at start-up (AlertsConfig.ready): the integration
does not read alerts."""

from __future__ import annotations

from integrations.microsoft.verify import CheckResult
from portal.alerts.rules import RULES

QUEUE_RULES = ("queue_length", "dead_letters")


def check_queue(ctx: object) -> CheckResult:
    """The Job table's due and dead jobs, as the queue_length and dead_letters rules see them."""
    verdicts = {rule.name: rule.evaluate() for rule in RULES if rule.name in QUEUE_RULES}
    due, dead = verdicts["queue_length"], verdicts["dead_letters"]
    detail = f"{due.value:g} due, {dead.value:g} dead"
    problems = [verdict.message for verdict in (due, dead) if verdict.firing]
    if problems:
        return CheckResult("Queue", False, f"{detail}: {' '.join(problems)}")
    return CheckResult("Queue", True, detail)
