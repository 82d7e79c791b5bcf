from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from portal.access import users
from portal.access.actors import Actor
from portal.access.roles import OPERATOR, ROLES
from portal.approvals import services as approvals
from portal.approvals.gate import policy
from portal.approvals.models import ApprovalPolicy
from portal.jobs.services import RETRY_ALL_ACTION

# A second operator approves what demo-operator files (four eyes on bulk operations).
SECOND_OPERATOR = "demo-operator-2"
DEMO_APPROVALS = [RETRY_ALL_ACTION, "subscriptions.bulk_renew"]


class Command(BaseCommand):
    help = (
        "Create one demo user per role (demo-viewer, …) and a second operator; existing users "
        "are never touched. Turns on approvals for bulk operations above 100 items unless an "
        "approval policy was saved."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.command("create_demo_users")
        User = get_user_model()
        created = []
        wanted = [(f"demo-{role}", role) for role in ROLES] + [(SECOND_OPERATOR, OPERATOR)]
        for username, role in wanted:
            if User.objects.filter(username=username).exists():
                continue
            _user, password = users.create_user(actor, username, role)
            created.append((username, role, password))
        if not ApprovalPolicy.objects.exists() and not policy().from_environment:
            approvals.set_policy(actor, DEMO_APPROVALS, 100)
            self.stdout.write(
                "Approvals: bulk retry and bulk renewal of more than 100 items wait for a "
                f"second operator ({SECOND_OPERATOR} approves what demo-operator files)."
            )
        if not created:
            self.stdout.write("Demo users already exist; passwords are not shown again.")
            return
        self.stdout.write("Demo users (runportal shows their passwords when it is up):")
        for username, role, _password in created:
            self.stdout.write(f"  {username:<15} {role}")
        save_demo_passwords({username: password for username, _role, password in created})


def demo_passwords_file() -> Path:
    """Where the demo keeps its accounts' first passwords for runportal's start-up box: in the
    demo's own state directory (git-ignored, readable by the owner only), beside the emulator's
    tenant file that holds the demo's client secret."""
    return Path(settings.EMULATOR_STATE_DIR) / "demo-passwords.json"


def save_demo_passwords(passwords: dict[str, str]) -> None:
    path = demo_passwords_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(path.read_text()) if path.exists() else {}
    tmp = path.with_suffix(".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        json.dump({**known, **passwords}, file, indent=1)
    tmp.replace(path)
