"""``python manage.py graph_emulator --port 8443 --state-dir DIR [--demo]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from integrations.graph_emulator.cli import add_arguments, run_from_options


class Command(BaseCommand):
    help = "Run the local Microsoft identity platform + Microsoft Graph emulator (HTTPS)."

    def add_arguments(self, parser: Any) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        run_from_options(options)
