from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    """Four eyes on risky actions: the policy, approval requests, break glass."""

    name = "portal.approvals"
    label = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        # The covered actions register themselves with the gate; the system check validates
        # APPROVAL_REQUIRED_FOR against them.
        from portal.approvals import actions, checks  # noqa: F401
