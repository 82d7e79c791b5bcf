"""`manage.py check --deploy --fail-level WARNING` on the production settings as deployed.

The environment is the Kubernetes ConfigMap (deploy/k8s/configmap.yaml) plus freshly made
values for the secrets the Deployment injects, and nothing from this shell or a .env: what CI
checks is what production runs. Exits with the check's exit code.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import yaml
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
CONFIGMAP = ROOT / "deploy" / "k8s" / "configmap.yaml"


def production_environment() -> dict[str, str]:
    config = yaml.safe_load(CONFIGMAP.read_text(encoding="utf-8"))["data"]
    env = {
        name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ
    }
    env.update({name: str(value) for name, value in config.items()})
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        PORTAL_IGNORE_DOTENV="1",
        SECRET_KEY=secrets.token_urlsafe(50),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        AUDIT_CHAIN_KEY=f"ci:{secrets.token_urlsafe(32)}",
        MICROSOFT_TENANT_ID="00000000-0000-0000-0000-000000000001",
        MICROSOFT_CLIENT_ID="00000000-0000-0000-0000-000000000002",
        MICROSOFT_CLIENT_SECRET=secrets.token_urlsafe(30),
        # The Deployments' DATABASE_URL (fleet-portal-secret's database-url: the app role on
        # PostgreSQL). Nothing connects: check --deploy without --database reads settings only.
        DATABASE_URL=f"postgres://fleet_app:{secrets.token_urlsafe(16)}@postgres:5432/fleet",
    )
    return env


def main() -> int:
    command = [
        sys.executable,
        str(ROOT / "manage.py"),
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
    ]
    return subprocess.run(command, cwd=ROOT, env=production_environment()).returncode


if __name__ == "__main__":
    sys.exit(main())
