from tests.portal.access.sso_support import emulator, graph_emulator, sso_settings  # noqa: F401
