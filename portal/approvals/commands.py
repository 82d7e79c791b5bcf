"""The approval rules for management commands: a covered command without `--request` or
`--approval ID` refuses with a message; `--request --reason "…"` files a request; once another
person approved it, `--approval ID` runs it, once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.access.actors import Actor
from portal.approvals import services
from portal.approvals.gate import ApprovalRequired
from portal.approvals.models import ApprovalRequest
from portal.approvals.services import ApprovalError

T = TypeVar("T")


def add_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--request",
        action="store_true",
        help="When the approval policy covers this, file an approval request (with --reason) "
        "instead of refusing.",
    )
    parser.add_argument("--reason", default="", help="Why (with --request): the approvers read it.")
    parser.add_argument(
        "--approval",
        type=int,
        metavar="ID",
        help="Run approval request ID (filed with --request), once another person approved it.",
    )


def run_covered(
    command: BaseCommand, options: dict[str, Any], actor: Actor, perform: Callable[[Actor], T]
) -> T | None:
    """Run `perform` under the approval rules; None when a request was filed instead."""
    if options["approval"] is not None:
        outcome: dict[str, T] = {}

        def work(run_as: Actor) -> dict[str, Any]:
            outcome["value"] = perform(run_as)
            return {}

        try:
            approval = services.run_approved_by_command(actor, options["approval"], work)
        except ApprovalError as exc:
            raise CommandError(str(exc)) from None
        if approval.status == ApprovalRequest.Status.FAILED:
            raise CommandError(f"Approval request #{approval.pk} ran and failed: {approval.error}")
        return outcome.get("value")
    try:
        return perform(actor)
    except ApprovalRequired as required:
        if not options["request"]:
            raise CommandError(
                f'{required} It was not done. File a request with --request --reason "…"; '
                "once another person approved it, run this again with --approval ID."
            ) from None
        try:
            approval = services.request_approval(
                actor, required.action.key, required.params, options["reason"], "command"
            )
        except ApprovalError as exc:
            raise CommandError(str(exc)) from None
        command.stdout.write(
            f"Approval request #{approval.pk} filed: {approval.summary}. Once another person "
            f"approved it (console: Approvals, or POST /api/approvals/{approval.pk}/approve), "
            f"run the same command with --approval {approval.pk} before "
            f"{approval.expires_at:%Y-%m-%d %H:%M} UTC."
        )
        return None
