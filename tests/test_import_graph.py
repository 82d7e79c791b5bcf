"""The import graph of integrations/ and portal/ has no cycle and no forbidden arrow.

Built from the source with `ast` (nothing is imported), counting every import wherever it sits:
an import inside a function still makes a cycle, it only hides it until run time. Imports
under `if TYPE_CHECKING:` never run, so they are left out of the cycle check (they still count
as arrows: a module that names a screen's types knows the screen).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("integrations", "portal")


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    line: int
    type_checking: bool


def _modules(root: Path = ROOT) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, guarded: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, guarded
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), guarded)
        else:
            yield from _imports(node, guarded)


def arrows(modules: dict[str, Path]) -> list[Arrow]:
    """Every import between two modules of the packages (`from a import b` names a.b when it
    is a module, else a)."""
    found = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node, guarded in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                assert isinstance(node, ast.ImportFrom)
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    origin = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    origin = node.module or ""
                targets = [
                    f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                    for alias in node.names
                ]
            for target in targets:
                if target in modules and target != name:
                    found.append(Arrow(name, target, node.lineno, guarded))
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _is_view(module: str) -> bool:
    return module.rpartition(".")[2].endswith("views")


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# What the integration (integrations.microsoft) may use of the portal: its services, and the
# portal's small helpers. Anything else there is operator-facing and belongs above it.
INTEGRATION_USES = (
    "portal.access",  # actors and permission checks
    "portal.audit",  # the audit log
    "portal.jobs",  # durable work, schedules, retention
    "portal.events",  # the Fleet event feed
    "portal.runtime",  # settings changed at run time
    "portal.approvals",  # the four-eyes gate in front of credential and tenant changes
    "portal.lib",  # the shared helpers: encryption, the clock, trace context, redaction
)


def _integration_overreach(source: str, target: str) -> bool:
    return (
        _within(source, "integrations.microsoft")
        and _within(target, "portal")
        and not any(_within(target, allowed) for allowed in INTEGRATION_USES)
    )


# (who, what it must never import, why). Checked against every arrow.
FORBIDDEN = [
    (
        lambda s: _within(s, "integrations.graph"),
        lambda t: (
            _within(t, "portal")
            or _within(t, "integrations.microsoft")
            or _within(t, "integrations.graph_emulator")
        ),
        "the Graph client knows nothing of the portal or the integration: what it needs "
        "comes in through integrations.graph.ports",
    ),
    (
        lambda s: _within(s, "integrations"),
        lambda t: _within(t, "portal.console") or _within(t, "portal.api") or _is_view(t),
        "the integration knows no screen and no HTTP view",
    ),
    (
        lambda s: _within(s, "portal.access") or _within(s, "portal.audit"),
        lambda t: _within(t, "portal.console"),
        "access control and the audit log sit below the console",
    ),
    (
        lambda s: _within(s, "portal.console"),
        lambda t: _within(t, "portal.api") and _is_view(t),
        "the console calls services, not another package's HTTP views",
    ),
    (
        lambda s: _within(s, "portal.lib"),
        lambda t: not _within(t, "portal.lib"),
        "the shared helpers in portal.lib sit below every app and the integration",
    ),
]


def forbidden(found: list[Arrow]) -> list[str]:
    return [
        f"{arrow.source}:{arrow.line} imports {arrow.target} ({why})"
        for arrow in found
        for who, what, why in FORBIDDEN
        if who(arrow.source) and what(arrow.target)
    ] + [
        f"{arrow.source}:{arrow.line} imports {arrow.target} (the integration uses only the "
        "portal services it needs: INTEGRATION_USES)"
        for arrow in found
        if _integration_overreach(arrow.source, arrow.target)
    ]


@pytest.fixture(scope="module")
def graph() -> list[Arrow]:
    return arrows(_modules())


def test_there_is_no_import_cycle(graph):
    edges: dict[str, set[str]] = {}
    for arrow in graph:
        if not arrow.type_checking:
            edges.setdefault(arrow.source, set()).add(arrow.target)
    assert cycles(edges) == []


def test_type_hints_make_no_import_circle_either(graph):
    # An import only for a type hint still ties two modules' meanings together: a module that
    # needs another's type while that one imports it wants a Protocol of its own (the emulator's
    # route modules name graph_emulator.host.EmulatorHost, not the server that imports them).
    edges: dict[str, set[str]] = {}
    for arrow in graph:
        edges.setdefault(arrow.source, set()).add(arrow.target)
    assert cycles(edges) == []


def test_there_is_no_forbidden_arrow(graph):
    assert forbidden(graph) == []


# --------------------------------------------------------------------------- the checker itself


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return _modules(tmp_path)


def test_a_cycle_hidden_inside_a_function_is_found(tmp_path):
    modules = _tree(
        tmp_path,
        {
            "integrations/__init__.py": "",
            "integrations/a.py": "from integrations import b\n",
            "integrations/b.py": "def f():\n    from integrations.a import x\n",
            "integrations/c.py": "from integrations import a\n",
            "portal/__init__.py": "",
        },
    )
    edges: dict[str, set[str]] = {}
    for arrow in arrows(modules):
        edges.setdefault(arrow.source, set()).add(arrow.target)
    assert cycles(edges) == [["integrations.a", "integrations.b"]]


def test_type_checking_imports_make_no_cycle_but_still_count_as_arrows(tmp_path):
    modules = _tree(
        tmp_path,
        {
            "integrations/__init__.py": "",
            "integrations/a.py": "from . import b\n",
            "integrations/b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from integrations import a\n"
                "    from portal.console.views import page\n"
            ),
            "portal/__init__.py": "",
            "portal/console/__init__.py": "",
            "portal/console/views.py": "",
        },
    )
    found = arrows(modules)
    assert {(a.source, a.target, a.type_checking) for a in found} == {
        ("integrations.a", "integrations.b", False),
        ("integrations.b", "integrations.a", True),
        ("integrations.b", "portal.console.views", True),
    }
    edges: dict[str, set[str]] = {}
    for arrow in found:
        if not arrow.type_checking:
            edges.setdefault(arrow.source, set()).add(arrow.target)
    assert cycles(edges) == []
    assert forbidden(found) == [
        "integrations.b:4 imports portal.console.views (the integration knows no screen and "
        "no HTTP view)"
    ]


def test_each_never_arrow_is_reported(tmp_path):
    modules = _tree(
        tmp_path,
        {
            "integrations/__init__.py": "",
            "integrations/x.py": "from portal.api import views\n",
            "portal/__init__.py": "",
            "portal/api/__init__.py": "",
            "portal/api/views.py": "",
            "portal/api/services.py": "",
            "portal/access/__init__.py": "",
            "portal/access/ctx.py": "from portal.console.navigation import items\n",
            "portal/console/__init__.py": "",
            "portal/console/navigation.py": "",
            "portal/console/views.py": (
                "from portal.api.views import queue_metrics\nfrom portal.api import services\n"
            ),
            "portal/lib/__init__.py": "",
            "portal/lib/helper.py": "from portal.lib import clock\nfrom portal.access import ctx\n",
            "portal/lib/clock.py": "",
        },
    )
    assert sorted(forbidden(arrows(modules))) == [
        "integrations.x:1 imports portal.api.views (the integration knows no screen and no "
        "HTTP view)",
        "portal.access.ctx:1 imports portal.console.navigation (access control and the audit "
        "log sit below the console)",
        "portal.console.views:1 imports portal.api.views (the console calls services, not "
        "another package's HTTP views)",
        "portal.lib.helper:2 imports portal.access.ctx (the shared helpers in portal.lib sit "
        "below every app and the integration)",
    ]


def test_the_graph_client_and_the_integration_keep_to_their_layers(tmp_path):
    modules = _tree(
        tmp_path,
        {
            "integrations/__init__.py": "",
            "integrations/graph/__init__.py": "",
            "integrations/graph/auth.py": "from integrations.microsoft import models\n",
            "integrations/graph/ports.py": "from portal.lib.crypto import encrypt\n",
            "integrations/graph_emulator/__init__.py": "from integrations.graph import auth\n",
            "integrations/microsoft/__init__.py": "",
            "integrations/microsoft/models.py": "from integrations.graph import ports\n",
            "integrations/microsoft/sync.py": (
                "from portal.jobs import runner\nfrom portal.alerts import rules\n"
            ),
            "portal/__init__.py": "",
            "portal/lib/__init__.py": "",
            "portal/lib/crypto.py": "",
            "portal/jobs/__init__.py": "",
            "portal/jobs/runner.py": "",
            "portal/alerts/__init__.py": "",
            "portal/alerts/rules.py": "",
        },
    )
    assert sorted(forbidden(arrows(modules))) == [
        "integrations.graph.auth:1 imports integrations.microsoft.models (the Graph client "
        "knows nothing of the portal or the integration: what it needs comes in through "
        "integrations.graph.ports)",
        "integrations.graph.ports:1 imports portal.lib.crypto (the Graph client knows nothing of "
        "the portal or the integration: what it needs comes in through "
        "integrations.graph.ports)",
        "integrations.microsoft.sync:2 imports portal.alerts.rules (the integration uses only "
        "the portal services it needs: INTEGRATION_USES)",
    ]
