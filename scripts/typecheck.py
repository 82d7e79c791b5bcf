"""mypy (with django-stubs) on integrations/ and portal/, against a baseline that only shrinks.

`python scripts/typecheck.py` fails when mypy reports an error the baseline does not list (new
code must type-check) and when a listed error is gone (remove it, so it cannot come back).
`python scripts/typecheck.py --update` rewrites the baseline from the current errors; it says
what it added, and a review should refuse a baseline that grows.

Errors are compared as "path: [code] message", without line numbers, so edits elsewhere in a
file do not disturb them; a file with the same error twice is listed twice.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "mypy-baseline.txt"
ERROR = re.compile(
    r"^(?P<path>[^:]+):\d+(?::\d+)?: error: (?P<message>.*?)"
    r"(?:  \[(?P<code>[a-z-]+)\])?$"
)


def parse(output: str) -> Counter[str]:
    """mypy's error lines as baseline entries (notes and the summary are left out)."""
    errors: Counter[str] = Counter()
    for line in output.splitlines():
        match = ERROR.match(line)
        if match:
            errors[f"{match['path']}: [{match['code'] or 'misc'}] {match['message']}"] += 1
    return errors


def current_errors() -> Counter[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-pretty",
            "--no-error-summary",
            "--show-error-codes",
            "--hide-error-context",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    errors = parse(result.stdout)
    if result.returncode not in (0, 1) or (result.returncode == 1) != bool(errors):
        sys.exit(
            f"mypy did not run as expected (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    return errors


def read_baseline() -> Counter[str]:
    if not BASELINE.exists():
        return Counter()
    lines = BASELINE.read_text(encoding="utf-8").splitlines()
    return Counter(line for line in lines if line and not line.startswith("#"))


def write_baseline(errors: Counter[str]) -> None:
    header = (
        "# Known mypy errors (scripts/typecheck.py). This list may only shrink: fix an "
        "error, then\n# remove its line (python scripts/typecheck.py --update).\n"
    )
    BASELINE.write_text(
        header + "".join(f"{line}\n" for line in sorted(errors.elements())), encoding="utf-8"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="Rewrite the baseline.")
    args = parser.parse_args()
    errors, baseline = current_errors(), read_baseline()
    new, fixed = errors - baseline, baseline - errors
    if args.update:
        write_baseline(errors)
        for line in sorted(new.elements()):
            print(f"added (the baseline grew!): {line}")
        print(f"{BASELINE.name}: {sum(errors.values())} errors ({sum(baseline.values())} before).")
        return 0
    for line in sorted(new.elements()):
        print(f"new mypy error: {line}")
    for line in sorted(fixed.elements()):
        print(f"fixed, remove it from {BASELINE.name}: {line}")
    if new or fixed:
        print(
            f"mypy: {sum(new.values())} new, {sum(fixed.values())} fixed but still listed "
            f"(run mypy for line numbers; `python scripts/typecheck.py --update` after "
            f"fixing)."
        )
        return 1
    print(f"mypy: no new errors ({sum(baseline.values())} known in {BASELINE.name}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
