"""What the route modules need of the running emulator.

`server.EmulatorApp` imports the route modules (control, graph_*, demo) to build its router, so
they cannot import it back, not even for a type hint: they name this Protocol, which the app
satisfies structurally, and the modules form no import circle.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Protocol

from .config import Clock, Config
from .delivery import DeliveryManager
from .faults import FaultRegistry
from .httptypes import GraphError, Request, Response
from .identity import IdentityService
from .state import EmulatorState
from .throttling import Throttler


class EmulatorHost(Protocol):
    state: EmulatorState
    config: Config
    clock: Clock
    rng: random.Random
    identity: IdentityService
    throttler: Throttler
    faults: FaultRegistry
    delivery: DeliveryManager
    state_dir: Path
    control_token: str
    base_url: str
    ident: dict[str, Any]

    @property
    def graph_url(self) -> str: ...

    @property
    def log_seq(self) -> int: ...

    def apply_limits(self) -> None: ...

    def reset(self) -> None: ...

    def tenant_info(self, ca_path: Path | None = None) -> dict[str, Any]: ...

    def requests_since(self, since: int = 0) -> list[dict[str, Any]]: ...

    def dispatch(self, req: Request) -> Response: ...

    def graph_error_response(self, exc: GraphError, req: Request) -> Response: ...

    def mark_throttled(self, ctx: Any) -> None: ...
