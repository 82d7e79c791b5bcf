"""`manage.py recover [--reset-sync] [--timeout N] --yes`: the runbook's "Complete System
Recovery" (pause → clean up → optionally reset sync → resume → set up webhooks → verify),
the same steps and the same audit session as the console's Recovery page.

Exit status 0 only when every step succeeded and the final verification passed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.access.actors import Actor
from portal.approvals import commands as approvals
from portal.recovery import services as recovery


class Command(BaseCommand):
    help = "Pause, clean up subscriptions, optionally reset sync, resume, set up webhooks, verify."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset-sync",
            action="store_true",
            help="Also drop every delta token (the next runs are full syncs).",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            help="Seconds each verification check may wait (default 10).",
        )
        parser.add_argument(
            "--yes",
            action="store_true",
            help="Confirm: without it the command only lists the steps.",
        )
        approvals.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["timeout"] <= 0:
            raise CommandError("--timeout must be positive.")
        if not options["yes"]:
            self.stdout.write("This will run, in order:")
            for number, step in enumerate(recovery.STEPS, start=1):
                skipped = step.optional and not options["reset_sync"]
                self.stdout.write(
                    f"  {number}. {step.title}{' (skipped)' if skipped else ''} — {step.explains}"
                )
            raise CommandError("Nothing done: add --yes to run the recovery.")

        def report(step: recovery.Step, result: recovery.StepResult) -> None:
            if result.skipped:
                mark = self.style.WARNING("-")
            else:
                mark = self.style.SUCCESS("✔") if result.ok else self.style.ERROR("✘")
            self.stdout.write(f"{mark} {step.title}")
            for line in result.lines:
                self.stdout.write(f"    {line}")

        ran = approvals.run_covered(
            self,
            options,
            Actor.command("recover"),
            lambda actor: recovery.run_all(
                actor, reset_sync=options["reset_sync"], timeout=options["timeout"], on_step=report
            ),
        )
        if ran is None:
            return  # an approval request was filed
        session_id, results = ran
        self.stdout.write(f"Audit session: {session_id}")
        failed = [r.key for r in results if not r.ok]
        if failed or len(results) < len(recovery.STEPS):
            raise CommandError(
                f"Recovery did not complete cleanly: {', '.join(failed)} failed.", returncode=1
            )
        self.stdout.write(self.style.SUCCESS("Recovery complete and verified."))
