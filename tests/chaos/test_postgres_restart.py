"""PostgreSQL restarts while jobs run: processing resumes by itself and nothing is lost.

Restarts this machine's own cluster (`pg_ctlcluster --skip-systemctl-redirect 15 main
restart`); skipped where that command or the local cluster is not available.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter

import pytest
from django.db import connection

from integrations.microsoft.messaging import outbox
from integrations.microsoft.models import OutboundMessage
from portal.jobs.models import Job
from tests.chaos.conftest import db_retry, wait_until_done

pytestmark = pytest.mark.chaos

PG_VERSION = os.environ.get("CHAOS_PG_VERSION", "15")
PG_CLUSTER = os.environ.get("CHAOS_PG_CLUSTER", "main")
COUNT = 80


def restart_postgres() -> float:
    started = time.monotonic()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, PG_CLUSTER, "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return time.monotonic() - started


def test_processing_resumes_after_a_postgres_restart(clusters, emulator):
    if not shutil.which("pg_ctlcluster") or os.geteuid() != 0:
        pytest.skip("needs pg_ctlcluster and root to restart the local PostgreSQL")
    host = connection.settings_dict["HOST"] or "localhost"
    if host not in ("127.0.0.1", "localhost", "::1", "") and not host.startswith("/"):
        pytest.skip("the test database is not this machine's PostgreSQL")

    tenant = emulator.control.tenant()
    people = [u for u in tenant["users"] if not u["userPrincipalName"].startswith("fleet.bot")]
    messages = [
        outbox.send_mail(
            people[i % 4]["userPrincipalName"],
            people[4 + i % 4]["userPrincipalName"],
            f"chaos-b mail {i}",
            "x",
        )
        for i in range(COUNT)
    ]
    job_ids = [m.job_id for m in messages]

    # Slow enough that the restart lands in the middle of the run: 4 mailboxes x 2/s.
    group = clusters(MESSAGING_MAIL_PER_MINUTE="120")
    group.start(workers=2)
    deadline = time.monotonic() + 60
    while db_retry(lambda: Job.objects.filter(pk__in=job_ids, status="succeeded").count()) < 10:
        assert time.monotonic() < deadline, "workers did not start sending"
        time.sleep(0.2)

    took = restart_postgres()
    connection.close()  # this process's connection died with the server
    done_at_restart = db_retry(
        lambda: Job.objects.filter(pk__in=job_ids, status="succeeded").count()
    )
    print(f"\nPostgreSQL restarted in {took:.1f} s with {done_at_restart}/{COUNT} sent")
    assert done_at_restart < COUNT, "the restart should interrupt the run"

    # No intervention beyond what the schedules do (released here sooner): no restarts.
    counts = wait_until_done(job_ids, timeout=200)
    assert counts == {"succeeded": COUNT}, counts
    assert all(p.poll() is None for p in group.processes), f"a cluster died; see {group.log_path()}"
    assert set(
        OutboundMessage.objects.filter(pk__in=[m.pk for m in messages]).values_list(
            "status", flat=True
        )
    ) == {"sent"}
    subjects = Counter(
        m["subject"]
        for m in emulator.control.sent_messages(kind="mail")
        if m["subject"].startswith("chaos-b")
    )
    assert subjects == {f"chaos-b mail {i}": 1 for i in range(COUNT)}
