import secrets
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone


class Command(BaseCommand):
    help = (
        "Print a new AUDIT_CHAIN_KEY entry (id:secret). To rotate, put it first and keep "
        "the old entries after it: they still verify the rows they signed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"{timezone.now():%Y%m%d}:{secrets.token_urlsafe(32)}")
