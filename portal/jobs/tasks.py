"""django-q2 entry points: thin, take ids, safe to run twice."""

from __future__ import annotations

from portal.jobs import liveness, retention, runner, watchdog


def run_job(job_id: int) -> str:
    return runner.run_job(job_id)


def release_due_jobs() -> int:
    return runner.release_due_jobs()


def requeue_lost_jobs() -> int:
    return watchdog.requeue_lost_jobs()


def prune_expired_records() -> dict[str, int]:
    """Schedule entry: drop old records each app's Retention lets go (portal.jobs.retention)."""
    return retention.prune_all()


def heartbeat() -> None:
    runner.beat()


def answer_ping(ping_id: int) -> bool:
    """verify_integration's worker-alive ping."""
    return liveness.answer_ping(ping_id)
