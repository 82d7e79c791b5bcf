"""200 sends while worker processes are SIGKILLed at random moments: every job succeeds and
the emulator sees every message exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter

import pytest

from integrations.microsoft.messaging import outbox
from integrations.microsoft.models import OutboundMessage
from portal.jobs.models import Job, JobAttempt
from portal.jobs.runner import enqueue
from tests.chaos.conftest import connect_sender, wait_until_done

pytestmark = pytest.mark.chaos

MAILS, POSTS = 150, 50


def test_sends_survive_sigkilled_workers_exactly_once(clusters, emulator):
    rng = random.Random(5)
    tenant = emulator.control.tenant()
    people = [u for u in tenant["users"] if not u["userPrincipalName"].startswith("fleet.bot")]
    senders, recipients = people[:5], people[5:10]
    bot = next(
        u["id"] for u in tenant["users"] if u["userPrincipalName"] == emulator.service_account_upn
    )
    chats = [c["id"] for c in tenant["chats"] if bot in c["members"]]
    team = tenant["teams"][0]
    connect_sender(emulator)

    messages = []
    for i in range(MAILS):
        sender, to = senders[i % len(senders)], recipients[i % len(recipients)]
        messages.append(
            outbox.send_mail(
                sender["userPrincipalName"],
                to["userPrincipalName"],
                f"chaos-a mail {i}",
                f"Body {i}",
            )
        )
    for i in range(POSTS):
        if i % 2:
            messages.append(
                outbox.send_teams_message(f"chaos-a post {i}", chat_id=chats[i % len(chats)])
            )
        else:
            channel = team["channels"][i % len(team["channels"])]["id"]
            messages.append(
                outbox.send_teams_message(
                    f"chaos-a post {i}", team_id=team["id"], channel_id=channel
                )
            )
    job_ids = [m.job_id for m in messages]
    assert len(job_ids) == 200

    # Generous budgets (the budget itself is tested elsewhere); short settle times.
    group = clusters(MESSAGING_MAIL_PER_MINUTE="1200", MESSAGING_TEAMS_SENDER_PER_SECOND="20")
    group.start(workers=2)
    group.start(workers=2)

    started = time.monotonic()
    next_kill = [started + 1.0]

    def chaos() -> None:
        group.replace_exited()
        now = time.monotonic()
        if now >= next_kill[0] and now - started < 60:
            group.kill_random(rng)
            next_kill[0] = now + rng.uniform(0.2, 1.2)

    counts = wait_until_done(
        job_ids, timeout=200, each_second=chaos, on_stall=lambda: group.restart_all()
    )
    print(
        f"\nSIGKILLs: {group.kills}, exited clusters replaced: {group.replaced}, "
        f"cluster restarts after a stall: {group.restarts}, "
        f"took {time.monotonic() - started:.1f} s"
    )
    assert counts == {"succeeded": 200}, counts
    assert group.kills >= 20

    lost = JobAttempt.objects.filter(job_id__in=job_ids, outcome="lost").count()
    print(f"attempts lost to kills: {lost}")
    assert set(OutboundMessage.objects.values_list("status", flat=True)) == {"sent"}

    sent = emulator.control.sent_messages()
    mail_subjects = Counter(
        m["subject"] for m in sent if m["kind"] == "mail" and m["subject"].startswith("chaos-a")
    )
    post_bodies = Counter(
        m["body"]["content"]
        for m in sent
        if m["kind"] in ("chat", "channel") and "chaos-a" in m["body"]["content"]
    )
    assert mail_subjects == {f"chaos-a mail {i}": 1 for i in range(MAILS)}
    assert post_bodies == {f"chaos-a post {i}": 1 for i in range(POSTS)}
    # Each Graph message is claimed by exactly one outbound row.
    ids = list(OutboundMessage.objects.values_list("graph_message_id", flat=True))
    assert len(set(ids)) == 200 and "" not in ids
    assert Job.objects.filter(pk__in=job_ids, runs__gt=1).exists()  # kills did hit jobs


def test_a_cluster_whose_idle_workers_are_killed_starts_over(clusters, emulator):
    """An idle worker blocks reading the task queue and holds its lock; SIGKILLed there, it
    used to leave a cluster that looked alive and ran nothing, for good. The cluster now exits
    by itself and its supervisor (here the test, as runportal or Kubernetes) starts a new one."""
    group = clusters()
    cluster = group.start(workers=2)
    assert wait_until_done([enqueue("jobs.noop").pk for _ in range(5)], timeout=60) == {
        "succeeded": 5
    }
    for pid in group.workers_of(cluster):
        os.kill(pid, signal.SIGKILL)
    try:
        cluster.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("the wedged cluster is still running (and runs nothing)") from None
    with open(group.log_path()) as log:
        assert "died while waiting on a queue" in log.read()

    group.start(workers=2)
    assert wait_until_done([enqueue("jobs.noop").pk for _ in range(5)], timeout=60) == {
        "succeeded": 5
    }
