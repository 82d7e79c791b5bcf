"""The receiver tests use the integration's monitored-user fixture (with their own
emulator_user: no emulator is needed to receive notifications)."""

from tests.integrations.microsoft.conftest import monitored  # noqa: F401
