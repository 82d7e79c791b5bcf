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
    # Draft sends settle at once unless a test sets mail.send_delay_s (the tests of the
    # asynchronous send and of the portal's recovery from it do).
    with RunningEmulator(state_dir=state_dir, config={"mail": {"send_delay_s": 0}}) as emu:
        yield emu


@pytest.fixture
def emulator(graph_emulator: RunningEmulator) -> Iterator[RunningEmulator]:
    graph_emulator.reset()
    yield graph_emulator
