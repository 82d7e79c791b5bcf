"""Console pages that act on Graph run against the emulator, with the integration's
fixtures (the emulator itself comes from tests/portal/conftest.py)."""

from tests.integrations.microsoft.conftest import (  # noqa: F401
    _fresh_process_state,
    graph_settings,
    q_sync,
)
