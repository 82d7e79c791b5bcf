"""Outbound mail and Teams messages against the emulator: exactly once, across crashes."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from integrations import graph
from integrations.graph import throttle
from integrations.graph.errors import Throttled
from integrations.microsoft.messaging import delivery, mail, outbox, steps, teams
from integrations.microsoft.messaging.errors import InvalidMessage
from integrations.microsoft.models import MonitoredUser, OutboundMessage, SendBudget
from portal.audit.models import AuditEvent
from portal.jobs.errors import PermanentJobError, TransientJobError
from portal.jobs.models import Job
from portal.jobs.runner import release_due_jobs
from portal.jobs.watchdog import requeue_lost_jobs
from tests.conftest import run_queued_jobs

pytestmark = pytest.mark.django_db


class Crash(BaseException):
    """Stands for the worker dying (SIGKILL): no handler code runs after it."""


run_queued = run_queued_jobs


def mails(emulator, subject: str) -> list[dict[str, Any]]:
    return [m for m in emulator.control.sent_messages(kind="mail") if m["subject"] == subject]


def posts(emulator, text: str) -> list[dict[str, Any]]:
    return [
        m
        for m in emulator.control.sent_messages()
        if m["kind"] in ("chat", "channel") and text in str(m["body"])
    ]


def wait_for_mail(emulator, subject: str, timeout: float = 15) -> dict[str, Any]:
    """The emulator's record of the mail once Exchange has sent it (asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = mails(emulator, subject)
        if found:
            assert len(found) == 1
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"{subject!r} never reached Sent Items")


def crash_after(monkeypatch, method: str, path_suffix: str) -> None:
    """Let the first matching Graph call happen, then 'kill the worker' before its result is
    recorded."""
    real = steps.call
    state = {"done": False}

    def call(m: str, path: str, **kwargs: Any):
        response = real(m, path, **kwargs)
        if not state["done"] and m == method and path.endswith(path_suffix):
            state["done"] = True
            raise Crash(f"killed after {m} {path}")
        return response

    monkeypatch.setattr(steps, "call", call)


def tagged_items(emulator, sender: str, key: str) -> list[dict[str, Any]]:
    token = emulator.token()
    flt = (
        f"singleValueExtendedProperties/Any(ep: ep/id eq '{mail.TAG_PROPERTY_ID}' "
        f"and ep/value eq '{key}')"
    )
    return (
        emulator.session()
        .get(
            f"{emulator.graph_url}/users/{sender}/messages",
            params={"$filter": flt},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        .json()["value"]
    )


class TestMail:
    def test_a_mail_is_sent_once_as_a_tagged_draft(self, graph_settings, emulator, people):
        sender, to = people
        message = outbox.send_mail(
            sender, [to], "Route R7 closed", "Use R9.", idempotency_key="ticket-7"
        )
        assert message.status == "queued" and message.idempotency_key == "ticket-7"
        assert message.job.idempotency_key is None  # one key: the message's
        # The same key again: the same message, no second job.
        again = outbox.send_mail(
            sender, [to], "Route R7 closed", "Use R9.", idempotency_key="ticket-7"
        )
        assert again.pk == message.pk and Job.objects.count() == 1

        assert run_queued() == ["succeeded"]
        message.refresh_from_db()
        assert message.status == "sent" and message.step == "done" and message.sent_at
        assert message.graph_message_id and message.internet_message_id
        sent = mails(emulator, "Route R7 closed")
        assert len(sent) == 1 and sent[0]["via"] == "draft.send" and sent[0]["to"] == [to]
        assert sent[0]["singleValueExtendedProperties"] == [
            {"id": mail.TAG_PROPERTY_ID, "value": message.graph_tag}
        ]
        # The sent item keeps the tag: that is how a retry recognises it.
        items = tagged_items(emulator, sender, message.graph_tag)
        assert [i["isDraft"] for i in items] == [False]
        assert Job.objects.get().status == "succeeded"

    def test_a_crash_after_the_draft_sends_that_draft_once(
        self, graph_settings, emulator, people, monkeypatch
    ):
        sender, to = people
        message = outbox.send_mail(sender, to, "Brake pads late", "Friday.")
        crash_after(monkeypatch, "POST", "/messages")
        job_id = message.job_id
        with pytest.raises(Crash):
            run_queued()
        message.refresh_from_db()
        assert message.step == "draft_requested" and not message.graph_draft_id
        assert [i["isDraft"] for i in tagged_items(emulator, sender, message.graph_tag)] == [True]
        assert mails(emulator, "Brake pads late") == []

        # The worker is gone: the watchdog counts the run as lost and the retry runs.
        Job.objects.filter(pk=job_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert requeue_lost_jobs() == 1
        Job.objects.filter(pk=job_id).update(next_attempt_at=timezone.now())
        assert release_due_jobs() == 1
        assert run_queued() == ["succeeded"]

        message.refresh_from_db()
        assert message.status == "sent"
        assert len(mails(emulator, "Brake pads late")) == 1
        drafts_created = emulator.control.requests_log(
            path=r"/users/[^/]+/messages$", method="POST"
        )
        assert len(drafts_created) == 1  # the existing draft was reused
        assert [i["isDraft"] for i in tagged_items(emulator, sender, message.graph_tag)] == [False]
        job = Job.objects.get(pk=job_id)
        assert job.runs == 2 and list(job.attempt_log.values_list("outcome", flat=True)) == [
            "lost",
            "succeeded",
        ]

    def test_a_crash_after_the_send_finds_the_sent_item(
        self, graph_settings, emulator, people, monkeypatch
    ):
        sender, to = people
        message = outbox.send_mail(sender, to, "Tyre check done", "All fine.")
        crash_after(monkeypatch, "POST", "/send")
        with pytest.raises(Crash):
            delivery.deliver(message.pk)
        message.refresh_from_db()
        assert message.step == "send_requested" and message.status == "sending"
        monkeypatch.undo()

        assert delivery.deliver(message.pk) == "sent"
        message.refresh_from_db()
        assert message.status == "sent"
        assert len(mails(emulator, "Tyre check done")) == 1
        assert len(emulator.control.requests_log(path=r"/send$", method="POST")) == 1
        # Running it yet again (a duplicate delivery) does nothing.
        assert delivery.deliver(message.pk) == "already-sent"

    def test_a_crash_before_the_send_left_graph_waits_then_sends_the_draft(
        self, graph_settings, emulator, people, monkeypatch
    ):
        sender, to = people
        message = outbox.send_mail(sender, to, "Yard closed", "Sunday.")

        def die(*args: Any, **kwargs: Any):
            raise Crash("killed before the send")

        real = steps.call
        monkeypatch.setattr(
            steps,
            "call",
            lambda m, p, **kw: die() if p.endswith("/send") else real(m, p, **kw),
        )
        with pytest.raises(Crash):
            delivery.deliver(message.pk)
        monkeypatch.undo()
        # The send was requested and its outcome is unknown: wait for Exchange to settle.
        graph_settings.MESSAGING_SEND_SETTLE_SECONDS = 30
        with pytest.raises(TransientJobError) as caught:
            delivery.deliver(message.pk)
        assert 25 < caught.value.retry_after <= 30
        assert mails(emulator, "Yard closed") == []
        graph_settings.MESSAGING_SEND_SETTLE_SECONDS = 0
        assert delivery.deliver(message.pk) == "sent"
        assert len(mails(emulator, "Yard closed")) == 1

    def test_the_recorded_id_is_the_sent_items_copy_once_exchange_has_sent_it(
        self, graph_settings, emulator, people
    ):
        # Exchange sends a draft asynchronously; the id the portal records must still name
        # the message once it sits in Sent Items (an immutable id, asked for on every call).
        emulator.control.configure(mail={"send_delay_s": 0.5})
        sender, to = people
        message = outbox.send_mail(sender, to, "Axle recall", "Check TRK-9.")
        assert run_queued() == ["succeeded"]
        message.refresh_from_db()
        assert message.status == "sent" and mails(emulator, "Axle recall") == []
        record = wait_for_mail(emulator, "Axle recall")
        assert record["sent_item_id"] == message.graph_message_id
        answer = (
            emulator.session()
            .get(
                f"{emulator.graph_url}/users/{sender}/messages/{message.graph_message_id}",
                headers={
                    "Authorization": f"Bearer {emulator.token()}",
                    "Prefer": 'IdType="ImmutableId"',
                },
                timeout=10,
            )
            .json()
        )
        assert answer["isDraft"] is False and answer["subject"] == "Axle recall"
        sends = emulator.control.requests_log(path=r"/send$", method="POST")
        assert len(sends) == 1

    def test_a_retry_while_exchange_is_still_sending_waits_instead_of_sending_again(
        self, graph_settings, emulator, people, monkeypatch
    ):
        # The worker dies right after Graph accepted the send; Exchange takes a while, and
        # meanwhile the tagged draft is still listed as a draft.
        emulator.control.configure(mail={"send_delay_s": 1.0})
        graph_settings.MESSAGING_SEND_SETTLE_SECONDS = 30
        sender, to = people
        message = outbox.send_mail(sender, to, "Depot moved", "To gate 4.")
        crash_after(monkeypatch, "POST", "/send")
        with pytest.raises(Crash):
            delivery.deliver(message.pk)
        monkeypatch.undo()
        assert [i["isDraft"] for i in tagged_items(emulator, sender, message.graph_tag)] == [True]
        # The retry (the watchdog's, moments later) sees the draft and waits: no second send.
        with pytest.raises(TransientJobError) as caught:
            delivery.deliver(message.pk)
        assert 25 < caught.value.retry_after <= 30
        assert len(emulator.control.requests_log(path=r"/send$", method="POST")) == 1

        record = wait_for_mail(emulator, "Depot moved")
        # The retry after the wait finds the sent item by its tag: done, sent once.
        assert delivery.deliver(message.pk) == "sent"
        message.refresh_from_db()
        assert message.status == "sent" and message.graph_message_id == record["sent_item_id"]
        assert len(mails(emulator, "Depot moved")) == 1
        assert len(emulator.control.requests_log(path=r"/send$", method="POST")) == 1

    def test_a_refused_recipient_dead_letters_with_graphs_reason(
        self, graph_settings, emulator, people
    ):
        sender, _ = people
        emulator.control.inject_fault(path=r"/send$", kind="status", status=400, count=1)
        message = outbox.send_mail(sender, "nobody@example.com", "Bad", "x")
        assert run_queued() == ["dead"]
        message.refresh_from_db()
        assert message.status == "failed" and message.last_error
        assert message.job.status == "dead"

    def test_bad_input_is_refused_before_anything_is_queued(self, db):
        with pytest.raises(InvalidMessage, match="at least one recipient"):
            outbox.send_mail("ops@fleet.example", [], "s", "b")
        with pytest.raises(InvalidMessage, match="not an e-mail address"):
            outbox.send_mail("ops@fleet.example", ["not-an-address"], "s", "b")
        with pytest.raises(InvalidMessage, match="exactly one target"):
            outbox.send_teams_message("x", chat_id="c", team_id="t")
        assert not OutboundMessage.objects.exists() and not Job.objects.exists()


class TestTeams:
    def test_a_chat_message_goes_out_as_the_sender(self, sender_connected, emulator, bot, bot_chat):
        message = outbox.send_teams_message("Truck 12 is late", chat_id=bot_chat)
        assert run_queued() == ["succeeded"]
        message.refresh_from_db()
        assert message.status == "sent" and message.sender == emulator.service_account_upn
        sent = posts(emulator, "Truck 12 is late")
        assert len(sent) == 1 and sent[0]["kind"] == "chat"
        assert sent[0]["message_id"] == message.graph_message_id
        assert sent[0]["sender"] == emulator.service_account_upn

    def test_a_channel_message_goes_out(self, sender_connected, emulator, tenant):
        team = tenant["teams"][0]
        channel = team["channels"][0]["id"]
        message = outbox.send_teams_message(
            "<b>Depot</b> closes at 6", team_id=team["id"], channel_id=channel, content_type="html"
        )
        assert run_queued() == ["succeeded"]
        message.refresh_from_db()
        assert message.status == "sent" and message.channel == "teams_channel"
        assert posts(emulator, "closes at 6")[0]["channel_id"] == channel

    def test_a_crash_after_the_post_does_not_post_again(
        self, sender_connected, emulator, bot_chat, graph_settings, monkeypatch
    ):
        graph_settings.MESSAGING_TEAMS_SETTLE_SECONDS = 0
        other = outbox.send_teams_message("Shift swap OK", chat_id=bot_chat)
        delivery.deliver(other.pk)  # the same text, posted earlier by another message
        message = outbox.send_teams_message("Shift swap OK", chat_id=bot_chat)
        crash_after(monkeypatch, "POST", "/messages")
        with pytest.raises(Crash):
            delivery.deliver(message.pk)
        monkeypatch.undo()
        message.refresh_from_db()
        assert message.step == "post_requested" and not message.graph_message_id
        assert len(posts(emulator, "Shift swap OK")) == 2

        assert delivery.deliver(message.pk) == "sent"
        message.refresh_from_db()
        ids = [p["message_id"] for p in posts(emulator, "Shift swap OK")]
        assert len(ids) == 2  # not posted a third time
        # It claimed its own post, not the earlier one of the other message.
        other.refresh_from_db()
        assert {message.graph_message_id, other.graph_message_id} == set(ids)

    def test_without_the_protected_api_a_retry_stops_instead_of_posting_again(
        self, sender_connected, emulator, bot_chat, graph_settings, monkeypatch
    ):
        # The app-only read that finds an earlier post is a Teams protected API: without
        # Microsoft's approval the portal cannot know whether its post went out.
        graph_settings.MESSAGING_TEAMS_SETTLE_SECONDS = 0
        message = outbox.send_teams_message("Gate 2 closed", chat_id=bot_chat)
        crash_after(monkeypatch, "POST", "/messages")
        with pytest.raises(Crash):
            delivery.deliver(message.pk)
        monkeypatch.undo()
        emulator.control.set_protected_api(emulator.client_id, False)
        with pytest.raises(PermanentJobError, match="protected-API approval"):
            delivery.deliver(message.pk)
        assert len(posts(emulator, "Gate 2 closed")) == 1  # never posted twice

    def test_a_retry_before_the_chat_settles_waits(
        self, sender_connected, emulator, bot_chat, graph_settings, monkeypatch
    ):
        graph_settings.MESSAGING_TEAMS_SETTLE_SECONDS = 20
        message = outbox.send_teams_message("Fuel card blocked", chat_id=bot_chat)
        crash_after(monkeypatch, "POST", "/messages")
        with pytest.raises(Crash):
            delivery.deliver(message.pk)
        monkeypatch.undo()
        with pytest.raises(TransientJobError):
            delivery.deliver(message.pk)
        assert len(posts(emulator, "Fuel card blocked")) == 1

    def test_app_only_posting_is_refused_as_by_graph(self, graph_settings, emulator, bot_chat):
        graph_settings.MESSAGING_TEAMS_TOKEN_KIND = "app"
        message = outbox.send_teams_message("From the app", chat_id=bot_chat)
        assert run_queued() == ["dead"]
        message.refresh_from_db()
        assert message.status == "failed"
        assert "only for importing messages" in message.last_error
        assert "Missing role permissions" in message.last_error  # Graph's own words (403)
        assert posts(emulator, "From the app") == []
        assert message.job.status == "dead" and message.job.attempts == 1

    def test_without_a_sender_account_the_job_dies_saying_what_to_do(
        self, graph_settings, emulator, bot_chat
    ):
        message = outbox.send_teams_message("Anyone there?", chat_id=bot_chat)
        assert run_queued() == ["dead"]
        message.refresh_from_db()
        assert message.status == "failed"
        assert message.last_error == teams.NO_SENDER_MESSAGE
        job = message.job
        assert job.status == "dead" and teams.NO_SENDER_MESSAGE in job.last_error
        assert emulator.control.requests_log(method="POST", path=r"/chats/") == []


def post_times(emulator, path: str) -> list[float]:
    return [r["monotonic"] for r in emulator.control.requests_log(method="POST", path=path)]


class TestBudgets:
    def test_mail_sends_keep_to_the_mailbox_budget(self, graph_settings, emulator, people):
        graph_settings.MESSAGING_MAIL_PER_MINUTE = 120  # one send every 0.5 s
        sender, to = people
        for i in range(4):
            outbox.send_mail(sender, to, f"Budget {i}", "x")
        assert run_queued() == ["succeeded"] * 4
        times = post_times(emulator, r"/send$")
        assert len(times) == 4
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.45, gaps
        assert SendBudget.objects.filter(key=throttle.mailbox_key(sender)).exists()

    def test_a_far_slot_is_reserved_and_the_job_comes_back_then(
        self, graph_settings, emulator, people
    ):
        graph_settings.MESSAGING_MAIL_PER_MINUTE = 2  # one send every 30 s
        sender, to = people
        first = outbox.send_mail(sender, to, "First", "x")
        second = outbox.send_mail(sender, to, "Second", "x")
        assert run_queued() == ["succeeded", "retrying"]
        second.refresh_from_db()
        assert second.budget_slot_at is not None
        wait = (second.budget_slot_at - timezone.now()).total_seconds()
        assert 25 < wait <= 32
        job = Job.objects.get(pk=second.job_id)
        assert job.status == "retrying" and "budget" in job.last_error
        assert abs((job.next_attempt_at - second.budget_slot_at).total_seconds()) < 4
        assert len(mails(emulator, "Second")) == 0 and first.pk

    def test_teams_posts_keep_to_one_per_second_per_chat(
        self, sender_connected, emulator, bot_chat
    ):
        for i in range(3):
            outbox.send_teams_message(f"Tick {i}", chat_id=bot_chat)
        assert run_queued() == ["succeeded"] * 3
        log = emulator.control.requests_log(method="POST", path=r"/chats/[^/]+/messages$")
        assert [r["status"] for r in log] == [201, 201, 201]  # no 429 collected
        times = [r["monotonic"] for r in log]
        assert min(b - a for a, b in itertools.pairwise(times)) >= 0.95

    def test_a_429_blocks_the_mailbox_for_every_worker(self, graph_settings, emulator, people):
        graph_settings.MESSAGING_SEND_SETTLE_SECONDS = 0
        sender, to = people
        emulator.control.inject_fault(path=r"/send$", kind="429", retry_after=2, count=1)
        message = outbox.send_mail(sender, to, "After a 429", "x")
        # Graph may have acted on a 429'd send: the job comes back, it does not re-send here.
        assert run_queued() == ["retrying"]
        assert throttle.blocked_for(throttle.mailbox_key(sender)) > 0
        due_now(message.job_id)
        assert run_queued() == ["succeeded"]
        times = post_times(emulator, r"/send$")
        assert len(times) == 2 and times[1] - times[0] >= 2.0  # the window held
        message.refresh_from_db()
        assert message.status == "sent" and len(mails(emulator, "After a 429")) == 1

    def test_a_long_retry_after_goes_back_to_the_job_layer(self, graph_settings, emulator, people):
        sender, to = people
        emulator.control.inject_fault(path=r"/send$", kind="429", retry_after=120, count=1)
        message = outbox.send_mail(sender, to, "Long wait", "x")
        assert run_queued() == ["retrying"]
        job = Job.objects.get(pk=message.job_id)
        assert (job.next_attempt_at - timezone.now()).total_seconds() > 100
        assert throttle.blocked_for(throttle.mailbox_key(sender)) > 100
        message.refresh_from_db()
        # A 429 may have been acted on: the next run looks for the sent item first.
        assert message.step == "send_requested"

    def test_a_mailbox_named_by_upn_and_by_id_has_one_window(
        self, graph_settings, emulator, people, tenant
    ):
        sender, _ = people
        user = next(u for u in tenant["users"] if u["userPrincipalName"] == sender)
        MonitoredUser.objects.create(identifier=sender, upn=sender, graph_id=user["id"])
        assert throttle.mailbox_key(sender) == throttle.mailbox_key(user["id"])
        emulator.control.inject_fault(
            path=f"/users/{user['id']}/messages$", kind="429", retry_after=3, count=1
        )
        graph_settings.GRAPH_MAX_IN_PROCESS_WAIT_SECONDS = 1
        with pytest.raises(Throttled):
            graph.get(f"/users/{user['id']}/messages")
        # The same mailbox by its UPN waits too, in this process and in every other one.
        with pytest.raises(Throttled):
            graph.get(f"/users/{sender}/mailFolders")
        assert throttle.mailbox_blocked_for(sender) > 0
        assert SendBudget.objects.filter(key__contains=sender.lower()).count() == 0
        assert len(emulator.control.requests_log(path="/mailFolders")) == 0


def due_now(job_id: int) -> None:
    """The job's retry is due now (the test does not wait for its backoff); a short backoff
    may have been released already by the worker itself."""
    Job.objects.filter(pk=job_id, status="retrying").update(next_attempt_at=timezone.now())
    release_due_jobs()
    assert Job.objects.get(pk=job_id).status == "pending"


def received(emulator, path: str, fault: dict[str, Any]) -> int:
    """How many POSTs to `path` Graph received, once the one `fault` hit is logged too (the
    emulator logs a request when it has answered, and a timed-out one answers late)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = emulator.control.requests_log(method="POST", path=path)
        if any(entry.get("fault") == fault["id"] for entry in log):
            return len(log)
        time.sleep(0.1)
    raise AssertionError(f"the request that hit fault {fault['id']} was never logged")


# The emulator performs these requests and then answers as Graph sometimes does: a 429 (it may
# have been acted on), an answer after the client's read timeout, a reset connection.
ACTED_ON = [
    pytest.param({"kind": "429", "retry_after": 1}, id="429"),
    pytest.param({"kind": "latency", "latency_ms": 2500}, id="timeout"),
    pytest.param({"kind": "reset"}, id="reset"),
]


class TestActedOnDespiteTheAnswer:
    """After such an answer the client never re-sends blindly: the next run checks for the
    message's idempotency tag (mail) or its post (Teams) first, as after a crash."""

    @pytest.fixture(autouse=True)
    def _fast(self, graph_settings):
        graph_settings.GRAPH_READ_TIMEOUT = 1
        graph_settings.MESSAGING_SEND_SETTLE_SECONDS = 0
        graph_settings.MESSAGING_TEAMS_SETTLE_SECONDS = 0

    @pytest.mark.parametrize("fault", ACTED_ON)
    def test_a_draft_send_is_not_repeated(self, emulator, people, fault):
        sender, to = people
        rule = emulator.control.inject_fault(
            path=r"/send$", method="POST", perform=True, count=1, **fault
        )
        message = outbox.send_mail(sender, to, "Depot keys", "Desk 4.")
        assert run_queued() == ["retrying"]
        message.refresh_from_db()
        assert message.step == "send_requested" and message.status == "sending"
        assert len(mails(emulator, "Depot keys")) == 1  # Graph did send it

        due_now(message.job_id)
        assert run_queued() == ["succeeded"]
        message.refresh_from_db()
        assert message.status == "sent"
        assert len(mails(emulator, "Depot keys")) == 1
        assert received(emulator, r"/send$", rule) == 1

    @pytest.mark.parametrize("fault", ACTED_ON)
    def test_a_draft_is_not_created_twice(self, emulator, people, fault):
        sender, to = people
        rule = emulator.control.inject_fault(
            path=r"/users/[^/]+/messages$", method="POST", perform=True, count=1, **fault
        )
        message = outbox.send_mail(sender, to, "Tacho download", "Due Monday.")
        assert run_queued() == ["retrying"]
        message.refresh_from_db()
        assert message.step == "draft_requested"
        assert [i["isDraft"] for i in tagged_items(emulator, sender, message.graph_tag)] == [True]

        due_now(message.job_id)
        assert run_queued() == ["succeeded"]
        assert received(emulator, r"/users/[^/]+/messages$", rule) == 1
        assert len(mails(emulator, "Tacho download")) == 1

    @pytest.mark.parametrize("fault", ACTED_ON)
    def test_a_teams_post_is_not_repeated(self, sender_connected, emulator, bot_chat, fault):
        rule = emulator.control.inject_fault(
            path=r"/chats/[^/]+/messages$", method="POST", perform=True, count=1, **fault
        )
        message = outbox.send_teams_message("Gate 3 is open", chat_id=bot_chat)
        assert run_queued() == ["retrying"]
        message.refresh_from_db()
        assert message.step == "post_requested" and not message.graph_message_id
        assert len(posts(emulator, "Gate 3 is open")) == 1

        due_now(message.job_id)
        assert run_queued() == ["succeeded"]
        message.refresh_from_db()
        sent = posts(emulator, "Gate 3 is open")
        assert len(sent) == 1 and message.graph_message_id == sent[0]["message_id"]
        assert received(emulator, r"/chats/[^/]+/messages$", rule) == 1

    def test_a_teams_post_graph_did_not_act_on_goes_out_once(
        self, sender_connected, emulator, bot_chat
    ):
        rule = emulator.control.inject_fault(
            path=r"/chats/[^/]+/messages$", method="POST", kind="429", retry_after=1, count=1
        )
        message = outbox.send_teams_message("Wash bay free", chat_id=bot_chat)
        assert run_queued() == ["retrying"]
        assert posts(emulator, "Wash bay free") == []
        due_now(message.job_id)
        assert run_queued() == ["succeeded"]
        assert len(posts(emulator, "Wash bay free")) == 1
        assert received(emulator, r"/chats/[^/]+/messages$", rule) == 2


class TestCommand:
    def test_send_test_message_queues_and_audits(self, graph_settings, emulator, people):
        sender, to = people
        call_command("send_test_message", "--mail", "--from", sender, "--to", to)
        message = OutboundMessage.objects.get()
        assert message.channel == "mail" and message.to_recipients == [to]
        event = AuditEvent.objects.get(action="message.send_test")
        assert event.actor_type == "system" and event.target_id == str(message.pk)
        assert run_queued() == ["succeeded"]
        assert len(mails(emulator, message.subject)) == 1
