"""Stateful emulator of the Microsoft identity platform and Microsoft Graph.

Runs as its own process (``python -m integrations.graph_emulator``); core modules
don't import Django.  See README.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run"]


def run(*args: Any, **kwargs: Any) -> int:
    """Start the emulator (see :func:`integrations.graph_emulator.server.run`)."""
    from .server import run as _run

    return _run(*args, **kwargs)
