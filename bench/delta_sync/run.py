"""Delta sync against the emulator: how much of a throttled mailbox budget it uses, and how fast
it ingests when nothing throttles it.

    python bench/delta_sync/run.py [--quick] [--mailboxes N] [--items N]

1. Throttled: the emulator limits each mailbox to B requests per W seconds (the Outlook rule,
   scaled down: 10,000 per 600 s becomes 100 per 10 s). One thread per mailbox runs full
   rounds of the sync engine (`sync.run`, page size 10) back to back; a run that hands back
   because of a long Retry-After waits it out, as the job layer would. Reported: accepted
   requests per mailbox over the measured period (after the first window) as a fraction of
   the budget — target ≥ 85 % — and requests that reached the emulator inside a Retry-After
   window the emulator had given for that mailbox (found by joining the emulator's request
   log with our GraphCall rows by request-id) — target 0.
2. Unthrottled: one full round of a mailbox with N messages (page size 1000) — items per
   second ingested by the sync engine (Graph pages over HTTPS + upserts + checkpoints) vs a
   plain `bulk_create` of the same rows in the same batches. Target ratio ≥ 0.5.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import bench_env, emulator_env, ensure_database, setup_django

REPEATS = 3


def seed_mail(control, upn: str, count: int) -> None:
    for i in range(count):
        control.create_mail(upn, subject=f"bench {i}", body=f"Delta bench message {i}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter (< 1 minute)")
    parser.add_argument("--mailboxes", type=int, default=3)
    parser.add_argument("--items", type=int, default=None, help="messages in the big mailbox")
    parser.add_argument("--budget", type=int, default=100, help="requests per window")
    parser.add_argument("--window", type=float, default=10.0, help="throttling window, s")
    args = parser.parse_args()
    quick = args.quick
    duration = 20.0 if quick else 60.0
    items = args.items or (1500 if quick else 5000)

    from integrations.graph_emulator.testing import RunningEmulator

    emulator = RunningEmulator().start()
    try:
        env = bench_env(
            **emulator_env(emulator),
            # The client's own budget equals the emulator's rate (per 600 s, as in production).
            GRAPH_MAILBOX_BUDGET_PER_10_MIN=str(int(args.budget * 600 / args.window)),
            GRAPH_MAX_IN_PROCESS_WAIT_SECONDS="10",
        )
        ensure_database(env)
        setup_django(env)
        from integrations.microsoft.models import Credential

        Credential.objects.all().delete()  # each run's emulator has a new client secret
        throttled = run_throttled(emulator, args.mailboxes, args.budget, args.window, duration)
        ratio = run_unthrottled(emulator, items)
    finally:
        emulator.stop()
    ok = throttled["fraction"] >= 0.85 and throttled["violations"] == 0 and ratio >= 0.5
    return 0 if ok else 1


def _reset_tables() -> None:
    from integrations.microsoft.models import GraphCall, MonitoredUser, SyncedItem

    SyncedItem.objects.all().delete()
    MonitoredUser.objects.all().delete()
    GraphCall.objects.all().delete()


def _monitor(user: dict) -> object:
    from integrations.microsoft.models import MonitoredUser

    return MonitoredUser.objects.create(
        identifier=user["userPrincipalName"],
        graph_id=user["id"],
        upn=user["userPrincipalName"],
        watch_chat_messages=False,
    )


def run_throttled(
    emulator, mailboxes: int, budget: int, window: float, duration: float
) -> dict[str, float]:
    from django.conf import settings
    from django.db import connection

    from integrations import graph
    from integrations.graph import auth
    from integrations.graph.errors import GraphError
    from integrations.microsoft import sync
    from integrations.microsoft.models import GraphCall, SyncState

    _reset_tables()
    emulator.control.reset()
    emulator.control.configure(throttling={"mailbox_requests": budget, "mailbox_window_s": window})
    settings.SYNC_PAGE_SIZE = 10
    graph.reset_state()
    auth.invalidate()
    auth.app_token()
    users = [
        u
        for u in emulator.control.tenant()["users"]
        if not u["userPrincipalName"].startswith("fleet.bot")
    ][:mailboxes]
    states = [sync.ensure_state(_monitor(u).pk, "messages").pk for u in users]
    since = emulator.control.requests_log()[-1]["seq"] if emulator.control.requests_log() else 0
    stop_at = time.monotonic() + duration
    errors: list[str] = []

    def worker(state_id: int) -> None:
        try:
            while time.monotonic() < stop_at:
                SyncState.objects.filter(pk=state_id).update(delta_link="", next_link="")
                try:
                    sync.run(state_id, trigger="bench", max_pages=10_000)
                except GraphError as exc:
                    if not exc.transient:
                        raise
                    time.sleep(min(exc.retry_after or 1.0, max(0.0, stop_at - time.monotonic())))
        except Exception as exc:  # report, don't hang the benchmark
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(s,)) for s in states]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        print("errors:", *errors, sep="\n  ")

    log = [
        e
        for e in emulator.control.requests_log(since=since, path=r"/messages/delta")
        if e["mailbox"]
    ]
    retry_after = dict(
        GraphCall.objects.filter(status=429).values_list("request_id", "retry_after")
    )
    by_mailbox: dict[str, list[dict]] = defaultdict(list)
    for entry in log:
        by_mailbox[entry["mailbox"]].append(entry)
    fractions, violations, throttled_total = [], 0, 0
    for entries in by_mailbox.values():
        entries.sort(key=lambda e: e["monotonic"])
        start = entries[0]["monotonic"] + window  # the first window may hold a full budget
        end = entries[-1]["monotonic"]
        accepted = sum(1 for e in entries if start <= e["monotonic"] <= end and e["status"] != 429)
        fractions.append(accepted / ((end - start) * budget / window))
        for entry in entries:
            if entry["status"] != 429:
                continue
            throttled_total += 1
            opened = entry["monotonic"] + entry["duration_ms"] / 1000
            closes = opened + float(retry_after.get(entry["request_id"]) or 0)
            violations += sum(1 for e in entries if opened < e["monotonic"] < closes)
    fraction = min(fractions) if fractions else 0.0
    print(
        f"throttled: {len(by_mailbox)} mailboxes x {duration:.0f} s at {budget} requests / "
        f"{window:g} s each; budget used {fraction:.1%} (worst mailbox; all: "
        f"{', '.join(f'{f:.1%}' for f in fractions)}) (target >= 85%); 429s received: "
        f"{throttled_total}; requests inside a Retry-After window: {violations} (target 0)"
    )
    return {"fraction": fraction, "violations": violations}


def run_unthrottled(emulator, items: int) -> float:
    from django.conf import settings
    from django.db import transaction
    from django.utils import timezone

    from integrations import graph
    from integrations.graph import auth
    from integrations.microsoft import sync
    from integrations.microsoft.models import SyncedItem, SyncState

    _reset_tables()
    emulator.control.reset()
    emulator.control.configure(throttling={"enabled": False})
    graph.reset_state()
    auth.invalidate()
    user = next(
        u
        for u in emulator.control.tenant()["users"]
        if not u["userPrincipalName"].startswith("fleet.bot")
    )
    seeded = time.perf_counter()
    seed_mail(emulator.control, user["userPrincipalName"], items)
    print(f"seeded {items} messages in {time.perf_counter() - seeded:.1f} s")
    settings.SYNC_PAGE_SIZE = 1000
    monitored = _monitor(user)
    state_id = sync.ensure_state(monitored.pk, "messages").pk
    auth.app_token()

    engine_times, plain_times = [], []
    for _ in range(REPEATS):
        SyncedItem.objects.filter(monitored_user=monitored).delete()
        SyncState.objects.filter(pk=state_id).update(delta_link="", next_link="")
        started = time.perf_counter()
        run = sync.run(state_id, trigger="bench", max_pages=10_000)
        engine_times.append(time.perf_counter() - started)
        assert run is not None and run.outcome == "succeeded", run
    engine = min(engine_times)
    total = SyncedItem.objects.filter(monitored_user=monitored).count()
    print(
        f"sync engine: {total} items in {engine:.2f} s ({total / engine:,.0f} items/s, "
        f"{run.pages} pages; best of {REPEATS}: "
        f"{', '.join(f'{t:.2f}' for t in engine_times)} s)"
    )

    # The floor: the same rows, in the same batches, inserted with bulk_create.
    rows = list(
        SyncedItem.objects.filter(monitored_user=monitored).values(
            "kind", "graph_id", "summary", "item_at", "data"
        )
    )
    for _ in range(REPEATS):
        SyncedItem.objects.all().delete()
        now = timezone.now()
        started = time.perf_counter()
        for offset in range(0, len(rows), 1000):
            with transaction.atomic():
                SyncedItem.objects.bulk_create(
                    SyncedItem(monitored_user=monitored, first_seen_at=now, updated_at=now, **row)
                    for row in rows[offset : offset + 1000]
                )
        plain_times.append(time.perf_counter() - started)
    plain = min(plain_times)
    ratio = (total / engine) / (len(rows) / plain)
    print(
        f"plain bulk insert: {len(rows)} rows in {plain:.2f} s "
        f"({len(rows) / plain:,.0f} rows/s; best of {REPEATS}: "
        f"{', '.join(f'{t:.2f}' for t in plain_times)} s)"
    )
    print(f"ratio (sync engine / bulk insert): {ratio:.2f} (target >= 0.50)")
    return ratio


if __name__ == "__main__":
    sys.exit(main())
