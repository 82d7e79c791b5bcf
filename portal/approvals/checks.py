"""APPROVAL_REQUIRED_FOR must name actions that exist: a typo would silently cover nothing."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from portal.approvals.gate import ACTIONS


@register()
def check_approval_policy(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    unknown = [name for name in settings.APPROVAL_REQUIRED_FOR if name not in ACTIONS]
    if not unknown:
        return []
    return [
        Error(
            f"APPROVAL_REQUIRED_FOR names unknown action(s): {', '.join(unknown)}.",
            hint=f"Known actions: {', '.join(sorted(ACTIONS))}.",
            id="approvals.E001",
        )
    ]
