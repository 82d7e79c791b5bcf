"""Webhook ingest under gunicorn on PostgreSQL vs a one-row-insert baseline on the same stack.

    python bench/webhook_ingest/run.py [--quick]

A load generator in its own process posts realistic Graph notification batches (1 and 10
notifications, for existing subscriptions, with the right clientState) to /api/webhooks/mail,
and the same bodies to a baseline view that inserts one row. It reports requests/s,
notifications/s and p50/p95/p99 for each, their ratio, p99 at half of the measured peak, and
checks that every accepted notification is in the inbox.
Targets: ratio >= 0.6 of the baseline's requests/s; p99 < 100 ms at half of peak; nothing lost.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import ROOT, bench_env, ensure_database, setup_django

SUBSCRIPTIONS = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(len(values) * fraction))] if values else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (under a minute)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    seconds = 6 if args.quick else 20
    env = bench_env(
        DJANGO_SETTINGS_MODULE="bench.webhook_ingest.settings",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="ERROR",
    )
    ensure_database(env)
    setup_django(env)

    from django.db import connection
    from django.utils import timezone

    from integrations.microsoft import crypto
    from integrations.microsoft.models import MonitoredUser, NotificationInbox, Subscription
    from portal.jobs.models import Job

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_baseline_row (id bigserial PRIMARY KEY, body text)"
        )
        cursor.execute("TRUNCATE bench_baseline_row")
    NotificationInbox.objects.all().delete()
    Job.objects.filter(job_type="graph.process_notifications").delete()
    Subscription.objects.all().delete()
    MonitoredUser.objects.filter(identifier__startswith="bench").delete()
    subs = []
    for n in range(SUBSCRIPTIONS):
        user = MonitoredUser.objects.create(
            identifier=f"bench{n}@fleetdemo.onmicrosoft.com",
            upn=f"bench{n}@fleetdemo.onmicrosoft.com",
            graph_id=str(uuid.uuid4()),
        )
        secret = uuid.uuid4().hex
        sub = Subscription.objects.create(
            monitored_user=user,
            kind="messages",
            graph_id=str(uuid.uuid4()),
            resource=f"users/{user.graph_id}/mailFolders('inbox')/messages",
            change_types="created,updated",
            notification_url="http://x/api/webhooks/mail",
            client_state_encrypted=crypto.encrypt(secret),
            state=Subscription.State.ACTIVE,
            expiration=timezone.now() + timedelta(days=2),
        )
        subs.append((sub, user, secret))

    def batch(size: int, serial: int) -> str:
        items = []
        for i in range(size):
            sub, user, secret = subs[(serial + i) % len(subs)]
            message_id = f"AAMk{serial:09d}x{i:02d}"
            items.append(
                {
                    "subscriptionId": sub.graph_id,
                    "clientState": secret,
                    "changeType": "created",
                    "subscriptionExpirationDateTime": sub.expiration.isoformat(),
                    "tenantId": "bench-tenant",
                    "resource": f"Users/{user.graph_id}/Messages/{message_id}",
                    "resourceData": {
                        "@odata.type": "#Microsoft.Graph.Message",
                        "@odata.id": f"Users/{user.graph_id}/Messages/{message_id}",
                        "@odata.etag": f'W/"{serial}-{i}"',
                        "id": message_id,
                    },
                }
            )
        return json.dumps({"value": items})

    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "portal.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.workers),
            "--log-level",
            "error",
        ],
        env=env,
        cwd=ROOT,
    )
    try:
        import requests

        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.2)
        results = {}
        serial = 0
        for size in (1, 10):
            for target in ("baseline", "webhook"):
                bodies = [batch(size, serial + n) for n in range(60_000)]
                serial += 60_000
                with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                    json.dump(bodies, handle)
                path = "/bench/baseline" if target == "baseline" else "/api/webhooks/mail"
                out = subprocess.run(
                    [
                        sys.executable,
                        str(Path(__file__).parent / "loadgen.py"),
                        f"http://127.0.0.1:{port}{path}",
                        handle.name,
                        str(seconds),
                        str(args.concurrency),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                os.unlink(handle.name)
                stats = json.loads(out.stdout)
                latencies = stats["latencies_ms"]
                accepted = stats["statuses"].get("202", 0)
                results[(size, target)] = {
                    "rps": stats["sent"] / stats["wall"],
                    "accepted": accepted,
                    "statuses": stats["statuses"],
                    "p50": percentile(latencies, 0.50),
                    "p95": percentile(latencies, 0.95),
                    "p99": percentile(latencies, 0.99),
                }
                r = results[(size, target)]
                print(
                    f"batch {size:>2} {target:>8}: {r['rps']:7.0f} req/s "
                    f"{r['rps'] * size:8.0f} notifications/s  p50 {r['p50']:6.1f} ms  "
                    f"p95 {r['p95']:6.1f} ms  p99 {r['p99']:6.1f} ms  {r['statuses']}"
                )
        ok = True
        for size in (1, 10):
            ratio = results[(size, "webhook")]["rps"] / results[(size, "baseline")]["rps"]
            ok &= ratio >= 0.6
            print(
                f"batch {size:>2}: ratio webhook/baseline requests/s = {ratio:.2f} (target >= 0.60)"
            )
        # p99 at half of the peak the receiver reached with single notifications.
        half = results[(1, "webhook")]["rps"] / 2
        bodies = [batch(1, serial + n) for n in range(int(half * seconds) + 10)]
        serial += len(bodies)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(bodies, handle)
        out = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).parent / "loadgen.py"),
                f"http://127.0.0.1:{port}/api/webhooks/mail",
                handle.name,
                str(seconds),
                str(args.concurrency),
                str(half),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        os.unlink(handle.name)
        stats = json.loads(out.stdout)
        p99 = percentile(stats["latencies_ms"], 0.99)
        results[("half", "webhook")] = {"accepted": stats["statuses"].get("202", 0)}
        ok &= p99 < 100
        print(
            f"at half of peak ({half:.0f} req/s): p99 {p99:.1f} ms (target < 100 ms); "
            f"{stats['statuses']}"
        )
        accepted = sum(
            r["accepted"] * (size if isinstance(size, int) else 1)
            for (size, target), r in results.items()
            if target == "webhook"
        )
        stored = NotificationInbox.objects.count()
        lost = accepted - stored
        ok &= lost == 0
        print(
            f"accepted notifications {accepted}, in the inbox {stored}: "
            f"{'nothing lost' if lost == 0 else f'{lost} LOST'}"
        )
    finally:
        server.terminate()
        server.wait(timeout=20)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
