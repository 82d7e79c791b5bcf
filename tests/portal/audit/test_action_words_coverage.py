"""Every action the code records has words for the screens (the audit log, the dashboard's
chart markers), found by reading the source: a new audited action without words fails here
rather than showing its machine name to an on-call engineer."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

from portal.audit.actions import ACTION_WORDS, READ_WORDS

ROOT = Path(__file__).resolve().parents[3]
ACTION_NAME = re.compile(r"[a-z_]+\.[a-z_]+")
ACTION_PARAMETERS = {"action", "audit_action"}


def _sources() -> list[ast.Module]:
    files = [*ROOT.joinpath("portal").rglob("*.py"), *ROOT.joinpath("integrations").rglob("*.py")]
    return [ast.parse(path.read_text()) for path in files if "migrations" not in path.parts]


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _action(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if ACTION_NAME.fullmatch(node.value) else None
    return None


def recorded_actions() -> set[str]:
    """Action names as the code writes them: the first argument of record(), an `action=` or
    `audit_action=` argument of any call, the argument in an `action` parameter's place of a
    function that takes one (e.g. a helper that records for its callers), and constants named
    …_ACTION."""
    modules = _sources()
    # Functions with an action parameter, and its position among the positional arguments;
    # only names defined once (several `register` functions take other things first).
    positions: dict[str, int] = {}
    defined: Counter[str] = Counter()
    for module in modules:
        for node in ast.walk(module):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                defined[node.name] += 1
                names = [a.arg for a in node.args.args if a.arg not in ("self", "cls")]
                for index, name in enumerate(names):
                    if name in ACTION_PARAMETERS:
                        positions[node.name] = index
    positions = {name: index for name, index in positions.items() if defined[name] == 1}
    found: set[str] = set()
    for module in modules:
        for node in ast.walk(module):
            if isinstance(node, ast.Call):
                name = _name(node.func)
                candidates = [kw.value for kw in node.keywords if kw.arg in ACTION_PARAMETERS]
                if name in positions and len(node.args) > positions[name]:
                    candidates.append(node.args[positions[name]])
                found |= {a for a in map(_action, candidates) if a}
            elif isinstance(node, ast.Assign):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if any(t.endswith("_ACTION") for t in targets) and _action(node.value):
                    found.add(node.value.value)  # type: ignore[attr-defined]
    return found


def test_the_walk_finds_the_actions_however_they_are_recorded():
    actions = recorded_actions()
    assert {
        "job.retry",  # record("job.retry", …)
        "bulk.cancel",  # require(…, action="bulk.cancel")
        "event_endpoint.pause",  # a helper's `action` parameter, positionally
        "jobs.retry_all",  # RETRY_ALL_ACTION
        "auth.login",
    } <= actions
    assert len(actions) > 60


def test_every_recorded_action_has_words():
    words = set(ACTION_WORDS) | set(READ_WORDS)
    assert sorted(recorded_actions() - words) == []
