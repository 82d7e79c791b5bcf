"""Command-line parsing shared by ``__main__`` and the Django management command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .seed import DEFAULT_SEED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--state-dir", default=".graph-emulator")
    parser.add_argument("--demo", action="store_true", help="generate mail/chat traffic")
    parser.add_argument(
        "--demo-interval",
        type=float,
        default=None,
        help="seconds between generated messages (demo mode)",
    )
    parser.add_argument("--control-token", default=None)
    parser.add_argument(
        "--config", default=None, help="JSON object or path to a JSON file with config overrides"
    )
    parser.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        dest="redirect_uris",
        metavar="URI",
        help="a redirect URI registered on the demo app (repeatable; exact match, as in Entra)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--extra-users",
        type=int,
        default=0,
        help="seed this many more users (a mailbox and a 1:1 chat each): a fleet-size tenant",
    )
    parser.add_argument("--log-level", default="INFO")


def run_from_options(opts: dict[str, Any]) -> int:
    from .server import run

    config: dict[str, Any] = {}
    raw = opts.get("config")
    if raw:
        text = raw.strip()
        config = json.loads(text if text.startswith("{") else Path(text).read_text())
    if opts.get("demo_interval") is not None:
        config.setdefault("demo", {})["interval_s"] = float(opts["demo_interval"])
    return run(
        port=int(opts["port"]),
        state_dir=opts["state_dir"],
        host=opts["host"],
        demo=bool(opts["demo"]),
        control_token=opts.get("control_token"),
        config=config or None,
        seed=int(opts["seed"]),
        redirect_uris=list(opts.get("redirect_uris") or []),
        log_level=opts["log_level"],
        extra_users=int(opts.get("extra_users") or 0),
        own_process=True,
    )
