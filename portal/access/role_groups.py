"""Keep the role groups and their permissions in step with roles.MATRIX."""

from __future__ import annotations

from typing import Any

from portal.access.roles import MATRIX, PERMISSIONS


def sync_roles(apps: Any) -> None:
    """Create the permissions and groups; give each group exactly its role's permissions.

    Takes an app registry so the data migration (historical models) and the post_migrate
    handler (live models) share it.
    """
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(app_label="access", model="accesspolicy")
    by_codename = {}
    for codename, label in PERMISSIONS.items():
        permission, _ = Permission.objects.update_or_create(
            content_type=content_type, codename=codename, defaults={"name": label[:255]}
        )
        by_codename[codename] = permission
    Permission.objects.filter(content_type=content_type).exclude(
        codename__in=list(PERMISSIONS)
    ).delete()
    for role, codenames in MATRIX.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set([by_codename[c] for c in codenames])
