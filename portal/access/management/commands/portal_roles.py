from typing import Any

from django.core.management.base import BaseCommand

from portal.access.roles import matrix_markdown


class Command(BaseCommand):
    help = "Print the role matrix as a Markdown table (the one in docs/security.md)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(matrix_markdown())
