"""The emulator injects 429s and 503s (with Retry-After): jobs back off and finish, each
message goes out once, and no request lands inside a Retry-After window."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict

import pytest

from integrations.microsoft.messaging import outbox
from tests.chaos.conftest import connect_sender, wait_until_done

pytestmark = pytest.mark.chaos

MAILS, POSTS = 60, 12
# A request that reached Graph this soon after a 429/503 left our worker before the answer
# could be shared with the other workers (it was already in flight): not a violation.
IN_FLIGHT = 0.25
# Arrival and window times are measured by the emulator and our workers on different clocks;
# a request this close to the end of the window is not counted as inside it.
EDGE = 0.05


def window_key(entry: dict) -> str | None:
    """What a Retry-After applies to: the mailbox, or the chat/channel of a Teams post."""
    path = entry["path"]
    match = re.match(r"^/v1\.0/users/([^/]+)/", path)
    if match:
        return "mail:" + match.group(1).lower()
    match = re.match(r"^/v1\.0/(chats/[^/]+|teams/[^/]+/channels/[^/]+)/messages$", path)
    if match and entry["method"] == "POST":
        return "teams:" + match.group(1)
    return None


def test_jobs_back_off_and_finish_under_429s_and_503s(clusters, emulator):
    tenant = emulator.control.tenant()
    people = [u for u in tenant["users"] if not u["userPrincipalName"].startswith("fleet.bot")]
    bot = next(
        u["id"] for u in tenant["users"] if u["userPrincipalName"] == emulator.service_account_upn
    )
    chats = [c["id"] for c in tenant["chats"] if bot in c["members"]]
    connect_sender(emulator)
    retry_after = {}
    for spec in (
        {
            "path": r"^/v1\.0/users/[^/]+/messages",
            "kind": "429",
            "retry_after": 2,
            "probability": 0.12,
        },
        {
            "path": r"^/v1\.0/users/[^/]+/messages",
            "kind": "status",
            "status": 503,
            "retry_after": 1,
            "probability": 0.08,
        },
        {
            "path": r"^/v1\.0/chats/[^/]+/messages$",
            "method": "POST",
            "kind": "429",
            "retry_after": 2,
            "probability": 0.2,
        },
        {
            "path": r"^/v1\.0/chats/[^/]+/messages$",
            "method": "POST",
            "kind": "status",
            "status": 503,
            "retry_after": 1,
            "probability": 0.1,
        },
    ):
        rule = emulator.control.inject_fault(**spec)
        retry_after[rule["id"]] = spec["retry_after"]

    messages = [
        outbox.send_mail(
            people[i % 3]["userPrincipalName"],
            people[3 + i % 3]["userPrincipalName"],
            f"chaos-c mail {i}",
            "x",
        )
        for i in range(MAILS)
    ]
    messages += [
        outbox.send_teams_message(f"chaos-c post {i}", chat_id=chats[i % len(chats)])
        for i in range(POSTS)
    ]
    job_ids = [m.job_id for m in messages]

    group = clusters(MESSAGING_MAIL_PER_MINUTE="600", MESSAGING_TEAMS_SENDER_PER_SECOND="10")
    group.start(workers=2)
    group.start(workers=2)
    started = time.monotonic()
    counts = wait_until_done(job_ids, timeout=150)
    assert counts == {"succeeded": MAILS + POSTS}, counts

    log = sorted(emulator.control.requests_log(path=r"^/v1\.0/"), key=lambda e: e["monotonic"])
    faults = [e for e in log if e["fault"] in retry_after]
    print(
        f"\n{len(faults)} injected 429/503 answers, {len(log)} Graph requests, "
        f"{time.monotonic() - started:.1f} s"
    )
    assert sum(1 for e in faults if e["status"] == 429) >= 5
    assert sum(1 for e in faults if e["status"] == 503) >= 3

    by_key = defaultdict(list)
    for entry in log:
        key = window_key(entry)
        if key:
            by_key[key].append(entry)
    violations, in_flight = [], 0
    for fault in faults:
        key = window_key(fault)
        if key is None:
            continue
        opened = fault["monotonic"] + fault["duration_ms"] / 1000
        closes = opened + retry_after[fault["fault"]]
        for entry in by_key[key]:
            if opened < entry["monotonic"] < closes - EDGE:
                if entry["monotonic"] - opened <= IN_FLIGHT:
                    in_flight += 1
                else:
                    violations.append(
                        (fault["path"], entry["path"], round(entry["monotonic"] - opened, 3))
                    )
    print(f"requests already in flight when a window opened: {in_flight}")
    assert violations == []

    sent = emulator.control.sent_messages()
    subjects = Counter(
        m["subject"] for m in sent if m["kind"] == "mail" and m["subject"].startswith("chaos-c")
    )
    bodies = Counter(
        m["body"]["content"]
        for m in sent
        if m["kind"] == "chat" and "chaos-c" in m["body"]["content"]
    )
    assert subjects == {f"chaos-c mail {i}": 1 for i in range(MAILS)}
    assert bodies == {f"chaos-c post {i}": 1 for i in range(POSTS)}
