"""``python -m integrations.graph_emulator --port 8443 --state-dir DIR [--demo]``."""

from __future__ import annotations

import argparse
import sys

from .cli import add_arguments, run_from_options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m integrations.graph_emulator",
        description="Microsoft Graph / identity emulator",
    )
    add_arguments(parser)
    return run_from_options(vars(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
