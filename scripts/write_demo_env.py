"""Write a demo .env on the first `make run`; never overwrite one that exists."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    target = ROOT / ".env"
    if target.exists():
        print(".env exists; leaving it as it is.")
        return 0
    lines = [
        "# Written by `make run` for the local demo. Edit freely; it is never overwritten.",
        "DEBUG=true",
        f"SECRET_KEY={secrets.token_urlsafe(50)}",
        "ALLOWED_HOSTS=127.0.0.1,localhost",
        "SECURE_COOKIES=false",
        "SECURE_SSL_REDIRECT=false",
        "SECURE_HSTS_SECONDS=0",
        f"FIELD_ENCRYPTION_KEYS={Fernet.generate_key().decode()}",
        f"AUDIT_CHAIN_KEY=demo:{secrets.token_urlsafe(32)}",
    ]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    target.chmod(0o600)
    print("Wrote a demo .env (SQLite, DEBUG on).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
