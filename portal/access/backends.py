from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import BaseBackend

from portal.access.actors import role_of
from portal.access.roles import ADMIN


class AdminRoleBackend(BaseBackend):
    """The admin role may use every model in the Django admin.

    Model admins still narrow this down (the audit log is read-only, worker-owned state is
    read-only), and the portal's own actions stay governed by the role matrix.
    """

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return not perm.startswith("access.") and role_of(user_obj) == ADMIN

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return role_of(user_obj) == ADMIN
