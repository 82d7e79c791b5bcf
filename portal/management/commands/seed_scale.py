"""Fill the database with production-sized history for the console_scale benchmark.

Refuses to run unless told --confirm: it adds millions of rows.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.utils import timezone

from integrations.microsoft.models import GraphCall, MonitoredUser, Subscription, SyncState
from portal.audit.chain import GENESIS_HASH, compute_hash, signing_key
from portal.audit.models import AuditEvent
from portal.jobs.models import Job
from portal.lib import crypto

BATCH = 5000
ROUTES = [
    "/users/{id}/mailFolders/{id}/messages/delta",
    "/users/{id}/chats/getAllMessages/delta",
    "/subscriptions/{id}",
    "/users/{id}/sendMail",
    "/users/{id}/messages",
    "/chats/{id}/messages",
    "/users/{id}",
    "/subscriptions",
]
ACTIONS = [
    "job.retry",
    "sync.delta",
    "subscription.renew",
    "settings.change",
    "auth.login",
    "access.view",
    "job.discard",
    "sync.reset",
]


class Command(BaseCommand):
    help = (
        "Seed 1,000,000 jobs, 1,000,000 audit events, 100,000 subscriptions, 50,000 sync "
        "states and 2,000,000 Graph calls (scale with --scale) for benchmarks."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--confirm", action="store_true", help="Really add the rows.")
        parser.add_argument(
            "--scale", type=float, default=1.0, help="Multiply every count (0.01 for a quick run)."
        )
        parser.add_argument(
            "--only",
            default="users,subscriptions,jobs,audit,calls",
            help="Which parts to seed, comma-separated (to resume a run).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["confirm"]:
            raise CommandError(
                "seed_scale adds millions of rows; run it with --confirm on a "
                "database made for benchmarks."
            )
        scale = options["scale"]
        if not 0 < scale <= 10:
            raise CommandError("--scale must be between 0 and 10.")
        counts = {
            name: max(1, int(n * scale))
            for name, n in (
                ("users", 25_000),
                ("subscriptions", 100_000),
                ("jobs", 1_000_000),
                ("audit", 1_000_000),
                ("calls", 2_000_000),
            )
        }
        rng = random.Random(7)
        now = timezone.now()
        steps = {
            "users": ("monitored users and sync states", lambda: self._users(counts, rng)),
            "subscriptions": ("subscriptions", lambda: self._subscriptions(counts, rng, now)),
            "jobs": ("jobs", lambda: self._jobs(counts, rng, now)),
            "audit": ("audit events", lambda: self._audit(counts, rng, now)),
            "calls": ("Graph calls", lambda: self._calls(counts, rng, now)),
        }
        wanted = [part.strip() for part in options["only"].split(",") if part.strip()]
        unknown = set(wanted) - set(steps)
        if unknown:
            raise CommandError(f"Unknown parts: {', '.join(sorted(unknown))}.")
        for part in wanted:
            self._step(*steps[part])
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")

    def _step(self, label: str, work: Any) -> None:
        started = time.perf_counter()
        created = work()
        self.stdout.write(f"{label}: {created:,} rows in {time.perf_counter() - started:.1f}s")

    @staticmethod
    def _bulk(model: Any, rows: Any, total: int) -> int:
        batch: list = []
        made = 0
        for row in rows:
            batch.append(row)
            if len(batch) == BATCH:
                model.objects.bulk_create(batch)
                made += len(batch)
                batch = []
        if batch:
            model.objects.bulk_create(batch)
            made += len(batch)
        return made

    def _users(self, counts: dict[str, int], rng: random.Random) -> int:
        start = MonitoredUser.objects.count()
        users = (
            MonitoredUser(
                identifier=f"scale{start + n}@fleet.example",
                upn=f"scale{start + n}@fleet.example",
                graph_id=str(uuid.uuid4()),
                display_name=f"Driver {start + n}",
            )
            for n in range(counts["users"])
        )
        made = self._bulk(MonitoredUser, users, counts["users"])
        ids = list(MonitoredUser.objects.order_by("-id").values_list("id", flat=True)[:made])
        states = (
            SyncState(
                monitored_user_id=user_id,
                kind=kind,
                status=rng.choice(["idle", "idle", "idle", "failed", "never"]),
                item_count=rng.randint(0, 5000),
                last_success_at=timezone.now() - timedelta(minutes=rng.randint(1, 600)),
            )
            for user_id in ids
            for kind in ("messages", "chatMessages")
        )
        return made + self._bulk(SyncState, states, 2 * made)

    def _subscriptions(self, counts: dict[str, int], rng: random.Random, now: Any) -> int:
        users = list(MonitoredUser.objects.values_list("id", "graph_id")[: counts["users"]])
        secret = crypto.encrypt("scale-client-state")
        subs = (
            Subscription(
                monitored_user_id=users[n % len(users)][0],
                kind=("messages", "chatMessages")[n % 2],
                graph_id=str(uuid.uuid4()),
                resource=f"users/{users[n % len(users)][1]}/messages",
                change_types="created,updated",
                notification_url="https://portal/api/webhooks/mail",
                client_state_encrypted=secret,
                state=rng.choice(["active"] * 8 + ["removed", "failed"]),
                expiration=now + timedelta(minutes=rng.randint(-600, 10_000)),
                lifetime_started_at=now - timedelta(hours=rng.randint(1, 80)),
            )
            for n in range(counts["subscriptions"])
        )
        return self._bulk(Subscription, subs, counts["subscriptions"])

    def _jobs(self, counts: dict[str, int], rng: random.Random, now: Any) -> int:
        types = [
            "graph.sync_delta",
            "graph.lifecycle_event",
            "graph.send_mail",
            "graph.send_teams_message",
            "graph.webhooks.maintain",
        ]
        errors = [
            ("Throttled: 429 ApplicationThrottled", "a1b2c3d4e5f60718"),
            ("Transient: 503 Service Unavailable", "0f1e2d3c4b5a6978"),
            ("NotFound: 404 ErrorItemNotFound", "9a8b7c6d5e4f3021"),
        ]

        def make(n: int) -> Job:
            status = rng.choices(
                ["succeeded", "dead", "retrying", "pending", "cancelled"], weights=[90, 5, 2, 2, 1]
            )[0]
            error = rng.choice(errors) if status in ("dead", "retrying") else ("", "")
            created = now - timedelta(seconds=rng.randint(0, 30 * 86400))
            return Job(
                job_type=rng.choice(types),
                status=status,
                attempts=rng.randint(1, 5),
                runs=rng.randint(1, 5),
                payload={"userId": f"scale{n % 25000}@fleet"},
                last_error=error[0],
                error_signature=error[1],
                finished_at=created + timedelta(seconds=2) if status == "succeeded" else None,
                next_attempt_at=now + timedelta(minutes=5) if status == "retrying" else None,
            )

        made = self._bulk(Job, (make(n) for n in range(counts["jobs"])), counts["jobs"])
        # created_at is auto_now_add: spread it over a month so date filters mean something.
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE jobs_job SET created_at = now() - (random() * "
                    "interval '30 days') WHERE created_at > now() - interval '1 hour'"
                )
        return made

    def _audit(self, counts: dict[str, int], rng: random.Random, now: Any) -> int:
        """Appends a valid chain (verify_audit_chain passes) in bulk."""
        key = signing_key()
        with transaction.atomic():
            prev = (
                AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
                or GENESIS_HASH
            )
            start = now - timedelta(days=60)
            step = timedelta(days=60) / counts["audit"]

            def events() -> Any:
                nonlocal prev
                for n in range(counts["audit"]):
                    values = {
                        "created_at": start + step * n,
                        "actor_type": "user",
                        "actor_id": str(n % 40),
                        "actor_name": f"operator{n % 40}",
                        "actor_role": rng.choice(["support", "operator", "admin"]),
                        "action": rng.choice(ACTIONS),
                        "target_type": "job",
                        "target_id": str(rng.randint(1, 1_000_000)),
                        "params": {"n": n},
                        "outcome": rng.choice(["success"] * 18 + ["failure", "denied"]),
                        "reason": "",
                        "ip": "10.0.0.1",
                        "user_agent": "seed",
                        "request_id": "",
                    }
                    digest = compute_hash(prev, values, key)
                    yield AuditEvent(prev_hash=prev, hash=digest, key_id=key.id, **values)
                    prev = digest

            return self._bulk(AuditEvent, events(), counts["audit"])

    def _calls(self, counts: dict[str, int], rng: random.Random, now: Any) -> int:
        def make(n: int) -> GraphCall:
            status = rng.choices(
                [200, 201, 202, 429, 503, 404, None], weights=[80, 5, 5, 4, 2, 3, 1]
            )[0]
            return GraphCall(
                created_at=now - timedelta(seconds=rng.randint(0, 7 * 86400)),
                method="GET",
                route=rng.choice(ROUTES),
                status=status,
                duration_ms=rng.randint(20, 900),
                throttled=status == 429,
                retry_after=10 if status == 429 else None,
                mailbox=f"scale{n % 25000}@fleet.example",
                # Graph answers every call with a request-id (the search box finds calls by it).
                request_id=f"{rng.getrandbits(128):032x}",
            )

        return self._bulk(GraphCall, (make(n) for n in range(counts["calls"])), counts["calls"])
