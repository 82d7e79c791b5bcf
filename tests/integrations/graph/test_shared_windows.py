"""A Retry-After window seen by one worker process holds for every other one."""

import time

import pytest

from integrations import graph
from integrations.graph import throttle
from integrations.microsoft.models import SendBudget

pytestmark = pytest.mark.django_db


def test_a_429_is_shared_with_other_processes(graph_settings, emulator, mailbox):
    emulator.control.inject_fault(
        path=f"/users/{mailbox}/messages", kind="429", retry_after=2, count=1
    )
    graph.get(f"/users/{mailbox}/messages", params={"$top": "1"})
    row = SendBudget.objects.get(key=throttle.mailbox_key(mailbox))
    assert row.blocked_until is not None


def test_a_window_recorded_by_another_process_is_honoured(graph_settings, emulator, mailbox):
    # Another worker was told "Retry-After: 2" for this mailbox; this process never was.
    throttle.share_block(throttle.mailbox_key(mailbox), 2)
    graph.reset_state()  # nothing in this process's own memory
    started = time.monotonic()
    graph.get(f"/users/{mailbox}/messages", params={"$top": "1"})
    assert time.monotonic() - started >= 1.9
    assert [e["status"] for e in emulator.control.requests_log(path=f"/users/{mailbox}/")] == [200]
