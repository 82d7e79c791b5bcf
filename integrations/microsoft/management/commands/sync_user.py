"""`manage.py sync_user USER [--kind K] [--full | --reset] [--now]`: the runbook's
`POST /api/sync/delta|full|reset` from a shell.

USER is a monitored user's UPN, Graph id or identifier. By default the job is queued for
the workers; `--now` runs the delta round in this process instead.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.microsoft import sync
from integrations.microsoft.models import MonitoredUser, ResourceKind
from portal.access.actors import Actor


class Command(BaseCommand):
    help = "Delta-sync, fully sync or reset one monitored user's mail and/or chats."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="UPN, Graph id or identifier of a monitored user")
        parser.add_argument(
            "--kind",
            choices=[k.value for k in ResourceKind],
            help="Only this resource type (default: every watched one)",
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--full", action="store_true", help="Reset the token and run.")
        mode.add_argument(
            "--reset", action="store_true", help="Drop the token only; the next run is full."
        )
        parser.add_argument(
            "--now", action="store_true", help="Run the round here instead of queueing a job."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        ident = options["user"]
        user = MonitoredUser.objects.lookup(ident)
        if user is None:
            raise CommandError(f"No monitored user {ident!r}.")
        kinds = [options["kind"]] if options["kind"] else user.kinds
        actor = Actor.command("sync_user")
        for kind in kinds:
            if options["reset"]:
                sync.reset(actor, user.pk, kind)
                self.stdout.write(f"{user} {kind}: token dropped; the next run is full")
                continue
            if options["full"]:
                job = sync.full_sync(actor, user.pk, kind)
            else:
                job = sync.delta_now(actor, user.pk, kind)
            if options["now"]:
                run = sync.run(sync.ensure_state(user.pk, kind).pk, trigger="cli")
                if run is not None:
                    self.stdout.write(
                        f"{user} {kind}: {run.kind} {run.outcome}, {run.pages} "
                        f"pages, +{run.added} ~{run.updated} -{run.removed}"
                    )
            else:
                self.stdout.write(f"{user} {kind}: job #{job.pk} queued")
