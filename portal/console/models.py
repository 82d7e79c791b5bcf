from __future__ import annotations

from django.conf import settings
from django.db import models


class ConsolePreference(models.Model):
    """One person's console preferences (the time zone times are shown in)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_preference"
    )
    time_zone = models.CharField(max_length=64, default="UTC")

    def __str__(self) -> str:
        return f"{self.user} · {self.time_zone}"
