"""Write a demo .env on the first `make run`; never overwrite one that exists.

`PORT` and `PUBLIC_BASE_URL` given to `make run` (e.g. `PORT=8100 make run`) are written into
the .env as well, replacing the lines it has, so that a `manage.py …` in another terminal —
which reads the same .env — talks to the portal that is running (verify_integration checks
the webhook at that address, not at the default port).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
# Where the running portal is reached: what other terminals must agree on.
ADDRESS_KEYS = ("PORT", "PUBLIC_BASE_URL")
# The emulator's demo tenant: its service account (the Teams sender) is the probe mailbox.
DEMO_PROBE_MAILBOX = "fleet.bot@fleetdemo.onmicrosoft.com"


def demo_lines() -> list[str]:
    return [
        "# Written by `make run` for the local demo. Edit freely; it is never overwritten.",
        "DEBUG=true",
        f"SECRET_KEY={secrets.token_urlsafe(50)}",
        "ALLOWED_HOSTS=127.0.0.1,localhost",
        "SECURE_COOKIES=false",
        "SECURE_SSL_REDIRECT=false",
        "SECURE_HSTS_SECONDS=0",
        f"FIELD_ENCRYPTION_KEYS={Fernet.generate_key().decode()}",
        f"AUDIT_CHAIN_KEY=demo:{secrets.token_urlsafe(32)}",
        "# The end-to-end probe: the demo's service account mails itself, monitored like any",
        "# user (docs/operations.md, End-to-end probe).",
        f"PROBE_MAILBOX={DEMO_PROBE_MAILBOX}",
        f"MESSAGING_SENDER_MAILBOXES={DEMO_PROBE_MAILBOX}",
    ]


def persist_address(target: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Set PORT / PUBLIC_BASE_URL in `target` to the values given in `environ` (replacing a
    line that has another value, appending a missing one). Returns what changed."""
    given = {key: environ[key].strip() for key in ADDRESS_KEYS if environ.get(key, "").strip()}
    lines = target.read_text(encoding="utf-8").splitlines()
    changed: dict[str, str] = {}
    out = []
    for line in lines:
        key, _, value = line.partition("=")
        key = key.strip()
        if key in given and not line.lstrip().startswith("#"):
            wanted = given.pop(key)
            if value.strip() != wanted:
                changed[key] = wanted
            out.append(f"{key}={wanted}")
        else:
            out.append(line)
    if given:
        out += ["# Where this portal runs (given to `make run`)."]
        out += [f"{key}={value}" for key, value in given.items()]
        changed.update(given)
    if changed:
        target.write_text("\n".join(out) + "\n", encoding="utf-8")
    return changed


def main(target: Path | None = None, environ: Mapping[str, str] | None = None) -> int:
    target = target or ROOT / ".env"
    environ = os.environ if environ is None else environ
    if target.exists():
        print(".env exists; leaving it as it is.")
    else:
        target.write_text("\n".join(demo_lines()) + "\n", encoding="utf-8")
        target.chmod(0o600)
        print("Wrote a demo .env (SQLite, DEBUG on).")
    for key, value in persist_address(target, environ).items():
        print(f"{key}={value} written to .env: other terminals use it too.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
