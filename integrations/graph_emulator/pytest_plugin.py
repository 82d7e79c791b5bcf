"""pytest fixtures: ``graph_emulator`` (session-scoped subprocess) and ``emulator``
(the same process, reset to the seeded demo tenant before each test).

Register with ``pytest_plugins = ["integrations.graph_emulator.pytest_plugin"]`` in the
root conftest, or import the two fixtures into a local conftest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import RunningEmulator


@pytest.fixture(scope="session")
def graph_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    state_dir = tmp_path_factory.mktemp("graph-emulator")
    with RunningEmulator(state_dir=state_dir) as emu:
        yield emu


@pytest.fixture
def emulator(graph_emulator: RunningEmulator) -> Iterator[RunningEmulator]:
    graph_emulator.reset()
    yield graph_emulator
