from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from portal.access import users
from portal.access.actors import Actor
from portal.access.roles import ROLES


class Command(BaseCommand):
    help = "Create one demo user per role (demo-viewer, …); existing users are never touched."

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.command("create_demo_users")
        User = get_user_model()
        created = []
        for role in ROLES:
            username = f"demo-{role}"
            if User.objects.filter(username=username).exists():
                continue
            _user, password = users.create_user(actor, username, role)
            created.append((username, role, password))
        if not created:
            self.stdout.write("Demo users already exist; passwords are not shown again.")
            return
        self.stdout.write("Demo users (passwords are shown only this once):")
        for username, role, password in created:
            self.stdout.write(f"  {username:<15} {role:<9} {password}")
