"""Job types and their handlers. Apps register theirs in a `job_handlers.py` module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[Any], Any]


@dataclass(frozen=True)
class SucceededWith:
    """A handler's result plus one update of its own record (the row `pk` of `model`), written
    with the job's success: in the same statement on PostgreSQL, in the same transaction
    elsewhere. The work's record and the job then say the same thing, and a hot job type saves
    a round trip. The update is skipped with the success when the run was already given up
    (the watchdog's verdict stands; the retry does the work again)."""

    result: Any
    model: Any  # a Django model class
    pk: Any
    fields: dict[str, Any]


# The permission (role-matrix codename) a person needs to re-run a job: one for the whole
# type, or a function of the job when it depends on what the job does.
RetryPermission = str | Callable[[Any], str]


@dataclass(frozen=True)
class JobType:
    name: str
    handler: Handler
    max_attempts: int = 5
    backoff_base: float = 30.0  # seconds before the first retry
    backoff_cap: float = 3600.0  # the longest wait between two attempts
    timeout: int = 120  # seconds a run may take before the watchdog presumes it lost
    description: str = ""
    # What people call it on screen ("Delta sync"); the name stays in small print for searches.
    label: str = ""
    # Retrying re-runs the work, so it needs the permission of starting that work.
    retry_permission: RetryPermission = "retry_job"
    # The django-q2 queue its jobs go to: "" the main one; "events" the event deliveries',
    # served by workers of their own (WORKER_QUEUE=events), so no endpoint delays Graph work.
    queue: str = ""


_REGISTRY: dict[str, JobType] = {}


class UnknownJobType(LookupError):
    pass


def job_handler(name: str, **options: Any) -> Callable[[Handler], Handler]:
    """Register `func(job)` as the handler of job type `name`.

    Handlers must be safe to run twice (delivery is at-least-once): they take what they need
    from `job.payload` and use `job.idempotency_key` to avoid repeating side effects.
    """

    def register(func: Handler) -> Handler:
        _REGISTRY[name] = JobType(name=name, handler=func, **options)
        return func

    return register


def get_job_type(name: str) -> JobType:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownJobType(f"No handler is registered for job type {name!r}.") from None


def job_type_label(name: str) -> str:
    """The human name of a job type (its registered label; else the type name itself)."""
    definition = _REGISTRY.get(name)
    return definition.label if definition is not None and definition.label else name


def retry_permission(job: Any) -> str:
    """What a person needs to re-run `job` (an unknown type cannot run: retry_job)."""
    definition = _REGISTRY.get(job.job_type)
    if definition is None:
        return "retry_job"
    permission = definition.retry_permission
    return permission(job) if callable(permission) else permission


def type_retry_permission(job_type: str) -> str | None:
    """The permission for every job of a type, or None when it depends on the job."""
    definition = _REGISTRY.get(job_type)
    if definition is None:
        return "retry_job"
    permission = definition.retry_permission
    return None if callable(permission) else permission


def queue_of(job_type: str) -> str:
    definition = _REGISTRY.get(job_type)
    return definition.queue if definition is not None else ""


def job_types() -> list[JobType]:
    return sorted(_REGISTRY.values(), key=lambda job_type: job_type.name)
