from __future__ import annotations

from django.db import models

from portal.access.roles import PERMISSIONS


class AccessPolicy(models.Model):
    """Holds the portal's custom permissions; it has no table of its own."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = list(PERMISSIONS.items())
