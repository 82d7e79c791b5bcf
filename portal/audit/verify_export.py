"""Check an exported audit stream offline: `python -m portal.audit.verify_export FILE`.

Needs the Python standard library and the chain key only (no Django, no database): give it
as AUDIT_CHAIN_KEY (or AUDIT_CHAIN_KEY_FILE) in the environment, or --key-file. Checks every
event's keyed hash, the chain between events, every checkpoint's MAC and the chain between
checkpoints. Exit 0 when the export verifies, 1 naming the first bad line, 2 on bad input.
To compare an export with the database, use `manage.py verify_audit_chain --against FILE`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from portal.audit.records import KeyListError, parse_keys, ring_of, verify_export


def _key_text(key_file: str | None) -> str:
    path = key_file or os.environ.get("AUDIT_CHAIN_KEY_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return os.environ.get("AUDIT_CHAIN_KEY", "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m portal.audit.verify_export", description=__doc__.splitlines()[0]
    )
    parser.add_argument("file", help="a JSON-lines audit export (stream file or checkpoint file)")
    parser.add_argument("--key-file", help="a file holding AUDIT_CHAIN_KEY (id:secret,…)")
    options = parser.parse_args(argv)
    try:
        keys = parse_keys(_key_text(options.key_file))
    except (KeyListError, OSError) as exc:
        print(f"The chain key cannot be read: {exc}", file=sys.stderr)
        return 2
    if not keys:
        print(
            "Give the chain key: AUDIT_CHAIN_KEY, AUDIT_CHAIN_KEY_FILE or --key-file.",
            file=sys.stderr,
        )
        return 2
    try:
        with open(options.file, encoding="utf-8") as export:
            check = verify_export(export, ring_of(keys))
    except OSError as exc:
        print(f"{options.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"{options.file} is not UTF-8 text.", file=sys.stderr)
        return 2
    print(check.message)
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
