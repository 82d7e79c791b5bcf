"""The runbook's "Complete System Recovery", as steps shared by the console and `manage.py
recover`.

    1. pause processing            (runbook: scale fleet-api and sync-worker to 0)
    2. clean up subscriptions      (npm run webhooks:cleanup)
    3. reset sync state, optional  (TRUNCATE microsoft_sync_state)
    4. resume processing           (scale back up)
    5. set up webhooks             (npm run setup:webhooks)
    6. verify                      (npm run verify:integration)

A recovery is a *session*: a correlation id carried as the request id of every audit event
its steps write (so the audit log shows them together), plus `recovery.start`,
`recovery.step` (one per step, with its result lines) and `recovery.finish` events whose
target is `recovery:<session id>`. The session's progress is read back from those events,
so any operator can watch or continue it, and nothing but the audit log is stored.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from integrations.graph.errors import GraphError
from integrations.microsoft import inbox, subscriptions, sync, verify
from integrations.microsoft.models import SyncState
from portal.access.actors import Actor
from portal.access.authz import require
from portal.approvals import gate
from portal.audit.models import AuditEvent
from portal.audit.services import record
from portal.jobs import services as job_services
from portal.jobs.models import PausedJobType
from portal.jobs.registry import job_types

TARGET = "recovery"
PAUSE_REASON = "complete system recovery"


class RecoveryError(Exception):
    """A step that cannot run now (message is for the operator)."""


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    explains: str
    optional: bool = False


STEPS: tuple[Step, ...] = (
    Step(
        "pause",
        "Pause processing",
        "Every Graph job type and the notification drain are paused: jobs already running "
        "finish, new and retried ones wait (nothing is lost). Webhook notifications are still "
        "accepted and wait in the inbox.",
    ),
    Step(
        "cleanup",
        "Clean up subscriptions",
        "Deletes expired subscription rows, subscriptions Graph no longer has, and this "
        "deployment's orphans in Graph.",
    ),
    Step(
        "reset_sync",
        "Reset sync state (optional)",
        "Drops every user's delta token: the next run of each is a full sync that re-reads "
        "the mailbox and chats. Skip it unless the sync state itself is suspect.",
        optional=True,
    ),
    Step(
        "resume",
        "Resume processing",
        "Resumes the job types and the notification drain this session paused (what was "
        "paused before it stays paused), releasing the jobs and notifications that waited.",
    ),
    Step(
        "setup",
        "Set up webhooks",
        "Creates missing subscriptions, renews and recreates the rest, each followed by a "
        "delta sync that catches up.",
    ),
    Step(
        "verify",
        "Verify",
        "Runs the integration checklist: configuration, token, Graph, permissions, "
        "subscriptions, webhook endpoint, worker, queue.",
    ),
)
STEP_KEYS = tuple(step.key for step in STEPS)


@dataclass
class StepResult:
    key: str
    ok: bool
    lines: list[str] = field(default_factory=list)
    skipped: bool = False
    data: dict[str, Any] = field(default_factory=dict)


def new_session_id() -> str:
    return "recovery-" + uuid.uuid4().hex[:16]


def _session_actor(actor: Actor, session_id: str) -> Actor:
    # Every audit event written by the steps' services carries the session id.
    return dataclasses.replace(actor, request_id=session_id)


def graph_job_types() -> list[str]:
    return [job_type.name for job_type in job_types() if job_type.name.startswith("graph.")]


def start(actor: Actor, *, reset_sync: bool = False) -> str:
    """Open a recovery session (audited); returns its id."""
    require(actor, "run_recovery", action="recovery.start", target_type=TARGET)
    gate.check(actor, "recovery.start", {"reset_sync": reset_sync})
    session_id = new_session_id()
    with transaction.atomic():
        record(
            "recovery.start",
            actor=_session_actor(actor, session_id),
            target_type=TARGET,
            target_id=session_id,
            params={"reset_sync": reset_sync, "steps": list(STEP_KEYS)},
        )
    return session_id


# --------------------------------------------------------------------------- the steps


def _pause(actor: Actor, session: dict[str, Any]) -> StepResult:
    already = set(PausedJobType.objects.values_list("job_type", flat=True))
    paused = []
    for name in graph_job_types():
        if name in already:
            continue
        job_services.pause_job_type(actor, name, PAUSE_REASON)
        paused.append(name)
    lines = [f"paused {name}" for name in paused]
    lines += [
        f"{name} was already paused (left as it is)"
        for name in sorted(already & set(graph_job_types()))
    ]
    # The drain is not a job type: it has a switch of its own.
    drain_paused = inbox.pause(actor, PAUSE_REASON)
    lines.append(
        "paused the notification drain (notifications are accepted and wait)"
        if drain_paused
        else "the notification drain was already paused (left as it is)"
    )
    return StepResult("pause", True, lines, data={"paused": paused, "drain_paused": drain_paused})


def _cleanup(actor: Actor, session: dict[str, Any]) -> StepResult:
    summary = subscriptions.cleanup(actor)
    return StepResult("cleanup", not summary.failed, summary.lines(), data=summary.counts())


def _reset_sync(actor: Actor, session: dict[str, Any]) -> StepResult:
    states = list(SyncState.objects.values_list("monitored_user_id", "kind"))
    for user_id, kind in states:
        sync.reset(actor, user_id, kind)
    return StepResult(
        "reset_sync",
        True,
        [
            f"reset {len(states)} sync state{'s' if len(states) != 1 else ''}: "
            "the next run of each is a full sync"
        ],
        data={"reset": len(states)},
    )


def _resume(actor: Actor, session: dict[str, Any]) -> StepResult:
    paused_here = session.get("paused", [])
    lines = []
    for name in paused_here:
        released = job_services.resume_job_type(actor, name)
        lines.append(
            f"resumed {name}: {released} waiting job{'s' if released != 1 else ''} released"
        )
    still = sorted(set(PausedJobType.objects.values_list("job_type", flat=True)))
    lines += [f"{name} stays paused (paused before this recovery)" for name in still]
    if session.get("drain_paused"):
        inbox.resume(actor)
        lines.append("resumed the notification drain: what waited is processed now")
    elif inbox.paused():
        lines.append("the notification drain stays paused (paused before this recovery)")
    return StepResult("resume", True, lines or ["nothing was paused by this session"])


def _setup(actor: Actor, session: dict[str, Any]) -> StepResult:
    summary = subscriptions.setup(actor)
    return StepResult("setup", not summary.failed, summary.lines(), data=summary.counts())


def _verify(actor: Actor, session: dict[str, Any], *, timeout: float = 10.0) -> StepResult:
    results = verify.verify_integration(actor, timeout=timeout)
    return StepResult(
        "verify",
        all(r.ok for r in results),
        [f"{'✔' if r.ok else '✘'} {r.name}: {r.detail}" for r in results],
        data={"failed": [r.name for r in results if not r.ok]},
    )


_RUNNERS: dict[str, Callable[..., StepResult]] = {
    "pause": _pause,
    "cleanup": _cleanup,
    "reset_sync": _reset_sync,
    "resume": _resume,
    "setup": _setup,
    "verify": _verify,
}


# --------------------------------------------------------------------------- session state


@dataclass
class SessionState:
    session_id: str
    started: AuditEvent | None
    results: dict[str, dict[str, Any]]
    finished: AuditEvent | None

    @property
    def exists(self) -> bool:
        return self.started is not None

    @property
    def reset_sync(self) -> bool:
        return bool(self.started and self.started.params.get("reset_sync"))

    @property
    def next_step(self) -> str | None:
        for key in STEP_KEYS:
            if key not in self.results:
                return key
        return None

    @property
    def paused(self) -> list[str]:
        return list((self.results.get("pause") or {}).get("data", {}).get("paused", []))

    @property
    def drain_paused(self) -> bool:
        """Whether this session's pause step paused the notification drain."""
        return bool((self.results.get("pause") or {}).get("data", {}).get("drain_paused"))


def load(session_id: str) -> SessionState:
    events = list(
        AuditEvent.objects.filter(target_type=TARGET, target_id=session_id)
        .exclude(outcome=AuditEvent.Outcome.DENIED)
        .order_by("id")
    )
    started = next((e for e in events if e.action == "recovery.start"), None)
    finished = next((e for e in events if e.action == "recovery.finish"), None)
    results: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.action == "recovery.step":
            step = event.params.get("step")
            # A failed step may be run again; the latest result counts.
            results[step] = {
                **event.params,
                "at": event.created_at,
                "by": event.actor_name,
                "outcome": event.outcome,
            }
    return SessionState(session_id, started, results, finished)


def run_step(
    actor: Actor, session_id: str, key: str, *, skip: bool = False, timeout: float = 10.0
) -> StepResult:
    """Run (or skip, when optional) the next step of a session; audited with its result.

    Steps run in order. A failed step is recorded and may be run again; the session moves on
    only past steps that succeeded or were skipped — except `verify`, the last, whose
    failure is the report itself.
    """
    require(actor, "run_recovery", action="recovery.step", target_type=TARGET, target_id=session_id)
    if key not in _RUNNERS:
        raise RecoveryError(f"There is no recovery step {key!r}.")
    state = load(session_id)
    if not state.exists:
        raise RecoveryError(f"There is no recovery session {session_id}.")
    if state.finished is not None:
        raise RecoveryError("This recovery session is finished; start a new one.")
    expected = _next_runnable(state)
    if key != expected:
        raise RecoveryError(f"The next step is “{_title(expected)}”, not “{_title(key)}”.")
    step = next(s for s in STEPS if s.key == key)
    session_actor = _session_actor(actor, session_id)
    if skip:
        if not step.optional:
            raise RecoveryError(f"“{step.title}” cannot be skipped.")
        result = StepResult(key, True, ["skipped by the operator"], skipped=True)
    else:
        try:
            runner = _RUNNERS[key]
            context = {"paused": state.paused, "drain_paused": state.drain_paused}
            result = (
                runner(session_actor, context, timeout=timeout)
                if key == "verify"
                else runner(session_actor, context)
            )
        except (GraphError, ValueError) as exc:
            result = StepResult(
                key, False, [f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"]
            )
    with transaction.atomic():
        record(
            "recovery.step",
            actor=session_actor,
            target_type=TARGET,
            target_id=session_id,
            params={
                "step": key,
                "ok": result.ok,
                "skipped": result.skipped,
                "lines": result.lines[:60],
                "data": result.data,
            },
            outcome="success" if result.ok else "failure",
            reason="" if result.ok else "; ".join(result.lines)[:500],
        )
        if key == STEP_KEYS[-1]:
            record(
                "recovery.finish",
                actor=session_actor,
                target_type=TARGET,
                target_id=session_id,
                params={"verified": result.ok},
                outcome="success" if result.ok else "failure",
            )
    return result


def _title(key: str | None) -> str:
    return next((s.title for s in STEPS if s.key == key), str(key))


def _next_runnable(state: SessionState) -> str | None:
    for key in STEP_KEYS:
        done = state.results.get(key)
        if done is None or not (done.get("ok") or key == "verify"):
            return key
    return None


def run_all(
    actor: Actor,
    *,
    reset_sync: bool = False,
    timeout: float = 10.0,
    on_step: Callable[[Step, StepResult], None] | None = None,
) -> tuple[str, list[StepResult]]:
    """The whole recovery in one go (the command). Stops at the first failed step — except
    that processing is always resumed if this session paused it."""
    session_id = start(actor, reset_sync=reset_sync)
    results: list[StepResult] = []
    for step in STEPS:
        skip = step.optional and not reset_sync
        result = run_step(actor, session_id, step.key, skip=skip, timeout=timeout)
        results.append(result)
        if on_step is not None:
            on_step(step, result)
        if not result.ok and step.key != "verify":
            if step.key in ("cleanup", "reset_sync"):
                # Do not leave the integration paused because a middle step failed.
                _resume_after_failure(actor, session_id)
            break
    return session_id, results


def _resume_after_failure(actor: Actor, session_id: str) -> None:
    state = load(session_id)
    session_actor = _session_actor(actor, session_id)
    for name in state.paused:
        job_services.resume_job_type(session_actor, name)
    if state.drain_paused:
        inbox.resume(session_actor)
    record(
        "recovery.finish",
        actor=session_actor,
        target_type=TARGET,
        target_id=session_id,
        params={
            "verified": False,
            "aborted": True,
            "resumed": state.paused,
            "drain_resumed": state.drain_paused,
        },
        outcome="failure",
        reason="a step failed; processing was resumed",
    )
