"""Push: signed deliveries (Standard Webhooks) to a local receiver that verifies them with
the standardwebhooks library; retries, 410, backlog catch-up, replay, rotation, SSRF."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone
from django_q.models import OrmQ

from portal.access import bearer_tokens, service_clients
from portal.access.actors import Actor
from portal.audit.models import AuditEvent
from portal.events import safe_http
from portal.events.delivery import take_slot
from portal.events.endpoints import (
    EndpointError,
    create_endpoint,
    pause_endpoint,
    replay_delivery,
    replay_since,
    resume_endpoint,
    rotate_secret,
    send_test,
)
from portal.events.fan_out import fan_out
from portal.events.models import EventDelivery, EventEndpoint
from portal.events.services import FAN_OUT_JOB, emit, emit_many
from portal.jobs import services as job_services
from portal.jobs.models import Job
from portal.jobs.registry import get_job_type
from portal.jobs.runner import enqueue, queue_key, release_due_jobs, run_job
from tests.conftest import run_queued_jobs
from tests.portal.events.receiver import running_receiver
from tests.portal.jobs import handlers as _test_handlers  # noqa: F401  (registers test.emit)

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


@pytest.fixture
def local(settings):
    settings.DEBUG = True  # http to 127.0.0.1 is a test receiver's, allowed explicitly
    settings.EVENT_ENDPOINT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.EVENT_DELIVERY_BATCH_SIZE = 3
    return settings


@pytest.fixture
def receiver(local):
    with running_receiver() as running:
        yield running


@pytest.fixture
def endpoint(receiver):
    endpoint, secret = create_endpoint(SYSTEM, receiver.url, [], "fleet core")
    receiver.secret = secret
    return endpoint


def deliver_all(rounds: int = 3) -> list[str]:
    fan_out()
    return run_queued_jobs(rounds)


def wait_until(condition, timeout: float = 60) -> None:
    """Poll until `condition()` holds (a bound against hanging, not a speed target)."""
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, "the condition never held"
        time.sleep(0.1)


def make_due() -> None:
    """Let every retrying delivery job's backoff pass, then release them."""
    Job.objects.filter(status="retrying").update(next_attempt_at=timezone.now())
    release_due_jobs()


def test_events_arrive_signed_in_order_in_batches(receiver, endpoint):
    for i in range(7):
        emit("mail.received", {"n": i})
    assert deliver_all() == ["succeeded"] * 3
    assert receiver.rejected == []
    assert [e["data"]["n"] for e in receiver.events()] == list(range(7))
    assert [len(d["body"]["data"]["events"]) for d in receiver.received] == [3, 3, 1]
    endpoint.refresh_from_db()
    assert endpoint.last_success_at and endpoint.backlog() == 0
    delivery = EventDelivery.objects.filter(endpoint=endpoint).first()
    assert delivery.last_status_code == 200 and delivery.last_response_excerpt == "ok"


def test_a_backlog_longer_than_one_run_queues_one_follow_up_for_all_endpoints(
    local, django_capture_on_commit_callbacks
):
    # Each run makes at most 20 batches (of 3 here) per endpoint; 70 events need a second
    # run. Each run covers every endpoint, so one follow-up job does: one per endpoint
    # multiplied the fan-out jobs with every round (bench/events drained 50 idle ones).
    endpoints = [create_endpoint(SYSTEM, f"http://127.0.0.1:9/ep{n}")[0] for n in range(3)]
    newest = emit_many(("mail.received", {"n": i}, "", None) for i in range(70))[-1]
    Job.objects.all().delete()  # the appends' own kick
    with django_capture_on_commit_callbacks(execute=True):
        assert fan_out() == 3 * 60
    assert Job.objects.filter(job_type=FAN_OUT_JOB).count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert fan_out() == 3 * 10
    assert Job.objects.filter(job_type=FAN_OUT_JOB).count() == 1  # done: no more follow-ups
    for endpoint in endpoints:
        endpoint.refresh_from_db()
        assert endpoint.cursor == newest.pk
        assert EventDelivery.objects.filter(endpoint=endpoint).count() == 24  # 70 in 3s


def test_a_fan_out_with_nothing_new_costs_two_queries(local, django_assert_num_queries):
    for n in range(3):
        create_endpoint(SYSTEM, f"http://127.0.0.1:9/ep{n}")
    emit("mail.received", {"n": 0})
    fan_out()
    with django_assert_num_queries(2):  # the newest event, the endpoints behind it (none)
        assert fan_out() == 0


def test_an_endpoint_gets_only_its_types_and_events_from_its_creation(receiver, local):
    emit("mail.received", {"n": "before"})
    _endpoint, secret = create_endpoint(SYSTEM, receiver.url, ["message.sent"])
    receiver.secret = secret
    emit("mail.received", {"n": "other type"})
    emit("message.sent", {"n": "wanted"})
    deliver_all()
    assert [e["data"]["n"] for e in receiver.events()] == ["wanted"]


def test_a_receiver_that_is_down_gets_everything_when_it_returns(receiver, endpoint):
    receiver.status = 503
    emit("mail.received", {"n": 0})
    deliver_all()
    delivery = EventDelivery.objects.get()
    assert delivery.status == "pending" and delivery.last_status_code == 503
    for i in range(1, 5):
        emit("mail.received", {"n": i})
    fan_out()
    assert EventDelivery.objects.count() == 1  # held back as the backlog while failing
    endpoint.refresh_from_db()
    assert endpoint.backlog() == 5 and endpoint.failing_since and endpoint.failure_streak
    first_id = delivery.webhook_id
    receiver.status = 200
    make_due()
    run_queued_jobs()
    deliver_all()  # the success kicks the fan-out; run it here directly
    assert [e["data"]["n"] for e in receiver.events()] == [0, 1, 2, 3, 4]
    assert receiver.received[0]["webhook-id"] == first_id  # the retry kept its webhook-id
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None and endpoint.backlog() == 0


def test_retries_keep_the_webhook_id_and_span_more_than_a_day():
    definition = get_job_type("events.deliver")
    # Equal jitter never waits less than half the delay: the shortest possible schedule.
    shortest = sum(
        min(definition.backoff_cap, definition.backoff_base * 2 ** (n - 1)) / 2
        for n in range(1, definition.max_attempts)
    )
    assert shortest >= 24 * 3600


def test_410_disables_the_endpoint_and_keeps_its_events(receiver, endpoint):
    receiver.status = 410
    emit("mail.received", {"n": 0})
    deliver_all()
    endpoint.refresh_from_db()
    assert endpoint.state == "disabled" and "410" in endpoint.state_reason
    assert EventDelivery.objects.get().status == "failed"
    assert AuditEvent.objects.filter(action="event_endpoint.disable").exists()
    emit("mail.received", {"n": 1})
    fan_out()
    assert EventDelivery.objects.count() == 1 and endpoint.backlog() == 1
    receiver.status = 200
    resume_endpoint(SYSTEM, endpoint.pk)
    deliver_all()
    assert [e["data"]["n"] for e in receiver.events()] == [1]


def test_an_endpoint_failing_for_too_long_is_disabled(receiver, endpoint, local):
    receiver.status = 500
    emit("mail.received", {"n": 0})
    deliver_all()
    EventEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(hours=25)
    )
    make_due()
    run_queued_jobs()
    endpoint.refresh_from_db()
    assert endpoint.state == "disabled" and "Failing since" in endpoint.state_reason
    assert EventDelivery.objects.get().status == "held"  # kept for when it is re-enabled


def test_pause_holds_and_resume_sends_the_backlog(receiver, endpoint):
    pause_endpoint(SYSTEM, endpoint.pk, "receiver maintenance")
    emit("chat_message.received", {"n": 0})
    deliver_all()
    assert receiver.received == []
    resume_endpoint(SYSTEM, endpoint.pk)
    deliver_all()
    assert [e["data"]["n"] for e in receiver.events()] == [0]


def test_replay_resends_with_the_same_webhook_id(receiver, endpoint):
    emit("mail.received", {"n": 0})
    deliver_all()
    delivery = EventDelivery.objects.get()
    replay_delivery(SYSTEM, delivery.pk)
    run_queued_jobs()
    assert [d["webhook-id"] for d in receiver.received] == [delivery.webhook_id] * 2
    assert replay_since(SYSTEM, endpoint.pk, timezone.now() - timedelta(hours=1)) == 1
    run_queued_jobs()
    assert len(receiver.received) == 3 and len(receiver.events()) == 1


def test_retrying_a_dead_delivery_job_sends_it_again_and_needs_endpoint_rights(
    receiver, endpoint, personas
):
    receiver.status = 500
    emit("mail.received", {"n": 0})
    fan_out()
    delivery = EventDelivery.objects.get()
    Job.objects.filter(pk=delivery.job_id).update(max_attempts=1)  # its last attempt
    run_queued_jobs()
    delivery.refresh_from_db()
    assert delivery.status == "failed" and Job.objects.get(pk=delivery.job_id).status == "dead"
    support = Actor(kind="user", name="sam-support", role="support", user=personas["support"])
    with pytest.raises(PermissionDenied):
        job_services.retry_job(support, delivery.job_id)
    receiver.status = 200
    admin = Actor(kind="user", name="ada-admin", role="admin", user=personas["admin"])
    job_services.retry_job(admin, delivery.job_id)
    assert run_queued_jobs() == ["succeeded"]
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 2
    assert [d["webhook-id"] for d in receiver.received] == [delivery.webhook_id]


def test_deliveries_reuse_a_kept_alive_connection_and_a_long_answer_does_not_poison_it(local):
    with running_receiver(keep_alive=True) as receiver:
        endpoint, receiver.secret = create_endpoint(SYSTEM, receiver.url)
        for n in range(3):
            emit("mail.received", {"n": n})
            deliver_all()
        assert len(receiver.received) == 3 and len(set(receiver.peers)) == 1  # one connection
        receiver.reply = b"x" * (safe_http.RESPONSE_CAP + 10)  # more than is read of it
        emit("mail.received", {"n": 3})
        deliver_all()
        delivery = EventDelivery.objects.filter(endpoint=endpoint).first()
        assert delivery.status == "delivered" and len(delivery.last_response_excerpt) == 500
        receiver.reply = b"ok"
        emit("mail.received", {"n": 4})
        deliver_all()  # on a new connection: the unread rest of the long answer was dropped
        assert [e["data"]["n"] for e in receiver.events()] == [0, 1, 2, 3, 4]
        assert EventDelivery.objects.filter(endpoint=endpoint).first().last_response_excerpt == "ok"
        assert len(set(receiver.peers)) == 2


def test_a_rotated_secret_signs_alongside_the_old_one_during_the_overlap(receiver, endpoint):
    old = receiver.secret
    _endpoint, new = rotate_secret(SYSTEM, endpoint.pk, overlap_hours=1)
    emit("mail.received", {"n": 0})
    deliver_all()
    assert len(receiver.received[0]["signature"].split(" ")) == 2  # verified with the old
    receiver.secret = new
    emit("mail.received", {"n": 1})
    deliver_all()
    assert receiver.rejected == [] and len(receiver.events()) == 2
    _endpoint, newest = rotate_secret(SYSTEM, endpoint.pk, overlap_hours=0)
    receiver.secret = old
    emit("mail.received", {"n": 2})
    deliver_all()
    assert receiver.rejected  # the old secret no longer verifies
    assert newest != new


def test_a_test_event_goes_out_even_while_paused(receiver, endpoint):
    pause_endpoint(SYSTEM, endpoint.pk)
    send_test(SYSTEM, endpoint.pk)
    run_queued_jobs()
    assert [e["type"] for e in receiver.events()] == ["test"]


# --------------------------------------------------------------------------- SSRF


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "https://127.0.0.1/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
        "https://10.1.2.3/x",
        "https://192.168.0.1/x",
        "https://0.0.0.0/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://[2002:7f00:1::]/x",  # 6to4 embedding 127.0.0.1
        "https://[2002:a9fe:a9fe::]/x",  # 6to4 embedding 169.254.169.254
        "https://[2002:0a00:0001::1]/x",  # 6to4 embedding 10.0.0.1
        "ftp://example.com/x",
        "https://user:pw@example.com/x",
        "https:///nohost",
        "not a url",
    ],
)
def test_private_loopback_link_local_and_odd_urls_are_refused(settings, url):
    settings.DEBUG = False
    with pytest.raises(EndpointError, match="url: "):
        create_endpoint(SYSTEM, url)
    assert not EventEndpoint.objects.exists()


def test_http_is_refused_outside_debug(settings):
    settings.DEBUG = False
    settings.EVENT_ENDPOINT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    with pytest.raises(EndpointError, match="https"):
        create_endpoint(SYSTEM, "http://127.0.0.1:8080/x")


def test_a_name_resolving_to_a_private_address_is_refused(settings, monkeypatch):
    settings.DEBUG = False

    def resolver(host, port, *args, **kwargs):
        address = "10.0.0.7" if host == "evil.example" else "93.184.216.34"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(safe_http.socket, "getaddrinfo", resolver)
    with pytest.raises(EndpointError, match=r"10\.0\.0\.7"):
        create_endpoint(SYSTEM, "https://evil.example/hook")
    assert safe_http.resolve("https://fine.example/hook").address == "93.184.216.34"


def test_dns_rebinding_after_creation_is_refused_at_delivery(receiver, endpoint, local):
    local.EVENT_ENDPOINT_ALLOWED_NETWORKS = []  # the receiver's address is now forbidden
    emit("mail.received", {"n": 0})
    deliver_all()
    delivery = EventDelivery.objects.get()
    assert receiver.received == [] and delivery.last_error.startswith("Refused")


def test_redirects_are_not_followed(receiver, endpoint):
    receiver.redirect_to = "http://169.254.169.254/latest/meta-data"
    emit("mail.received", {"n": 0})
    deliver_all()
    delivery = EventDelivery.objects.get()
    assert delivery.last_status_code == 302 and delivery.status == "pending"
    assert receiver.received == []


# --------------------------------------------------------------------------- API


def test_the_api_manages_endpoints_with_events_manage(client, receiver):
    _c, token = service_clients.create_client(SYSTEM, "fleet-ops", ["events:manage"])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    response = client.post(
        "/api/event-endpoints",
        data=json.dumps(
            {"url": receiver.url, "eventTypes": ["mail.received"], "description": "core"}
        ),
        content_type="application/json",
        **auth,
    )
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    created = response.json()
    assert created["secret"].startswith("whsec_") and created["state"] == "active"
    receiver.secret = created["secret"]
    listing = client.get("/api/event-endpoints", **auth).json()["endpoints"]
    assert [e["id"] for e in listing] == [created["id"]] and "secret" not in listing[0]
    base = f"/api/event-endpoints/{created['id']}"
    assert client.post(f"{base}/test", **auth).status_code == 200
    run_queued_jobs()
    detail = client.get(base, **auth).json()
    assert detail["deliveries"][0]["test"] and detail["deliveries"][0]["status"] == "delivered"
    assert client.post(f"{base}/pause", **auth).json()["state"] == "paused"
    assert client.post(f"{base}/resume", **auth).json()["state"] == "active"
    rotated = client.post(
        f"{base}/rotate-secret",
        data=json.dumps({"overlapHours": 2}),
        content_type="application/json",
        **auth,
    ).json()
    assert rotated["secret"] != created["secret"]
    replay = client.post(
        f"{base}/replay",
        data=json.dumps({"since": "yesterday"}),
        content_type="application/json",
        **auth,
    )
    assert replay.status_code == 400 and replay.json()["field"] == "since"
    delivery_id = detail["deliveries"][0]["id"]
    assert client.post(f"/api/event-deliveries/{delivery_id}/replay", **auth).status_code == 200
    assert client.post("/api/event-deliveries/999/replay", **auth).status_code == 404
    assert client.get("/api/event-endpoints/999", **auth).status_code == 404
    actions = set(
        AuditEvent.objects.filter(actor_name="fleet-ops").values_list("action", flat=True)
    )
    assert {
        "event_endpoint.create",
        "event_endpoint.test",
        "event_endpoint.pause",
        "event_endpoint.resume",
        "event_endpoint.rotate_secret",
        "event_delivery.replay",
    } <= actions


def test_bad_endpoint_input_is_a_400_naming_the_field(client, local):
    _c, token = service_clients.create_client(SYSTEM, "fleet-ops", ["events:manage"])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    for body, field in (
        ({"url": "https://169.254.169.254/"}, "url"),
        ({"url": 5}, "url"),
        ({"url": "https://example.com/", "eventTypes": ["nope"]}, "eventTypes"),
        ({"url": "https://example.com/", "eventTypes": "x"}, "eventTypes"),
    ):
        response = client.post(
            "/api/event-endpoints", data=json.dumps(body), content_type="application/json", **auth
        )
        assert response.status_code == 400 and response.json()["field"] == field, body
    _c, reader = service_clients.create_client(SYSTEM, "reader", ["events:read"])
    assert (
        client.get("/api/event-endpoints", HTTP_AUTHORIZATION=f"Bearer {reader}").status_code == 403
    )


# --------------------------------------------------------------------------- deadline


@contextmanager
def dripping_receiver(*, headers_first: bool, byte_every: float = 0.2):
    """A receiver on 127.0.0.1 that answers one byte every `byte_every` seconds: inside any
    read timeout, but its whole answer takes about 30 s. `headers_first`: the status line and
    headers at once, then the body drips; otherwise the status line itself drips. `state`
    counts connections, answers cut off by the portal, and answers finished."""
    server = socket.create_server(("127.0.0.1", 0))
    state = {"connections": 0, "cut_off": 0, "finished": 0}
    lock = threading.Lock()
    body = b"x" * 100
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    def count(key: str) -> None:
        with lock:
            state[key] += 1

    def serve(connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            position = answer.index(b"\r\n\r\n") + 4 if headers_first else 0
            try:
                connection.sendall(answer[:position])
                for index in range(position, len(answer)):
                    connection.sendall(answer[index : index + 1])
                    time.sleep(byte_every)
            except OSError:
                count("cut_off")  # the portal hung up
            else:
                count("finished")

    def accept() -> None:
        while True:
            try:
                connection, _peer = server.accept()
            except OSError:
                return  # closed
            count("connections")
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/slow", state
    finally:
        server.close()


@pytest.mark.parametrize("headers_first", [False, True], ids=["dripped-headers", "dripped-body"])
def test_a_dripping_receiver_cannot_hold_a_delivery_past_its_deadline(local, headers_first):
    local.EVENT_READ_TIMEOUT = 2  # each byte comes well within it
    local.EVENT_DELIVERY_DEADLINE_SECONDS = 1
    with dripping_receiver(headers_first=headers_first) as (url, state):
        create_endpoint(SYSTEM, url)
        emit("mail.received", {"n": 0})
        assert deliver_all(1) == ["retrying"]
    delivery = EventDelivery.objects.get()
    assert delivery.status == "pending" and delivery.delivered_at is None
    assert "no complete answer within 1 s" in delivery.last_error
    wait_until(lambda: state["cut_off"] == 1)
    assert state == {"connections": 1, "cut_off": 1, "finished": 0}


# --------------------------------------------------------------------------- isolation


def in_flight_elsewhere(endpoint: EventEndpoint) -> EventDelivery:
    """A delivery of `endpoint` holding a slot, as one being sent by another worker."""
    delivery = send_test(SYSTEM, endpoint.pk)
    OrmQ.objects.filter(pk=OrmQ.objects.order_by("-id")[0].pk).delete()  # not run here
    assert take_slot(delivery, endpoint)
    return delivery


def test_a_delivery_over_its_endpoints_cap_waits_without_using_an_attempt(
    local, receiver, endpoint
):
    local.EVENT_DELIVERY_ENDPOINT_CONCURRENCY = 1
    busy = in_flight_elsewhere(endpoint)
    emit("mail.received", {"n": 0})
    assert deliver_all(1) == ["deferred"]
    delivery = EventDelivery.objects.filter(is_test=False).get()
    job = Job.objects.get(pk=delivery.job_id)
    assert (job.status, job.attempts, job.runs) == ("pending", 0, 0)
    assert job.next_attempt_at is not None and not job.attempt_log.exists()
    assert delivery.attempts == 0 and receiver.received == []
    EventDelivery.objects.filter(pk=busy.pk).update(sending_until=None)  # it finished
    Job.objects.filter(pk=job.pk).update(next_attempt_at=timezone.now())
    release_due_jobs()
    assert run_queued_jobs() == ["succeeded"]
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 1
    assert delivery.sending_until is None  # the slot is free again


def test_concurrency_caps_per_endpoint_and_per_owner(local, receiver, personas):
    local.EVENT_DELIVERY_ENDPOINT_CONCURRENCY = 1
    local.EVENT_DELIVERY_OWNER_CONCURRENCY = 2
    fleet, raw = service_clients.create_client(SYSTEM, "fleet-ops", ["events:manage"])
    token = bearer_tokens.authenticate(raw)
    client_actor = Actor(kind="client", name="fleet-ops", role="", token=token, client=fleet)
    first, second, third = (create_endpoint(client_actor, receiver.url)[0] for _ in "123")
    console = create_endpoint(SYSTEM, receiver.url)[0]
    one = in_flight_elsewhere(first)
    assert not take_slot(send_test(SYSTEM, first.pk), first)  # its endpoint's cap
    assert take_slot(send_test(SYSTEM, second.pk), second)  # the owner's second
    assert not take_slot(send_test(SYSTEM, third.pk), third)  # the owner's cap
    assert take_slot(send_test(SYSTEM, console.pk), console)  # another owner
    # A slot whose worker died frees itself when its time is up.
    EventDelivery.objects.filter(pk=one.pk).update(
        sending_until=timezone.now() - timedelta(seconds=1)
    )
    assert take_slot(send_test(SYSTEM, third.pk), third)


def test_graph_jobs_proceed_while_slow_endpoints_hold_every_delivery_worker(local, qcluster):
    """Real workers: the main queue's (1 worker, as Graph work has) and the events queue's
    (2). Two endpoints that trickle their answers for about 30 s hold both delivery workers;
    jobs on the main queue still run to completion meanwhile."""
    local.EVENT_DELIVERY_BATCH_SIZE = 1
    worker_env = {
        "DEBUG": "1",
        "EVENT_ENDPOINT_ALLOWED_NETWORKS": "127.0.0.0/8",
        "EVENT_DELIVERY_DEADLINE_SECONDS": "25",
        "EVENT_DELIVERY_BATCH_SIZE": "1",
    }
    with (
        dripping_receiver(headers_first=True) as (slow_a, state_a),
        dripping_receiver(headers_first=True) as (slow_b, state_b),
    ):
        for url in (slow_a, slow_b):
            create_endpoint(SYSTEM, url)
        emit_many(("mail.received", {"n": n}, "", None) for n in range(3))
        Job.objects.all().delete()  # the appends' fan-out kick: the test fans out itself
        OrmQ.objects.all().delete()
        fan_out()  # 6 deliveries on the events queue
        qcluster(workers=2, WORKER_QUEUE="events", **worker_env)
        qcluster(workers=1, **worker_env)
        wait_until(lambda: state_a["connections"] + state_b["connections"] == 2)
        graph_work = [enqueue("jobs.noop", {"n": n}).pk for n in range(5)]
        wait_until(lambda: Job.objects.filter(pk__in=graph_work, status="succeeded").count() == 5)
        # Both slow answers are still trickling in: no delivery worker was free all along.
        assert state_a["finished"] + state_b["finished"] == 0
        assert state_a["cut_off"] + state_b["cut_off"] == 0
        assert EventDelivery.objects.filter(sending_until__isnull=False).count() == 2
        assert not EventDelivery.objects.filter(status="delivered").exists()


@pytest.mark.django_db(transaction=True)  # the fan-out follows the emitting commit
def test_events_emitted_by_a_job_fan_out_in_its_worker_right_after_it(receiver, endpoint):
    """No hop that only waits for a worker's wake-up: the fan-out runs in the worker that
    emitted, and the delivery goes to the events queue's workers."""
    job = enqueue("test.emit", {"count": 2})
    OrmQ.objects.all().delete()  # taken by this "worker"
    assert run_job(job.pk) == "succeeded"
    fan_out_job = Job.objects.get(job_type=FAN_OUT_JOB)
    assert fan_out_job.status == "succeeded" and fan_out_job.dispatched_at is None
    [delivery] = EventDelivery.objects.all()
    assert delivery.event_count == 2
    [queued] = OrmQ.objects.all()
    assert queued.key == queue_key("events")
    assert run_queued_jobs() == ["succeeded"] and len(receiver.received) == 1


@pytest.mark.django_db(transaction=True)
def test_events_emitted_outside_a_job_are_fanned_out_by_a_worker(receiver, endpoint):
    emit("test", {"n": 1})
    fan_out_job = Job.objects.get(job_type=FAN_OUT_JOB)
    assert fan_out_job.dispatched_at is not None
    assert run_queued_jobs(2) == ["succeeded", "succeeded"] and len(receiver.received) == 1
