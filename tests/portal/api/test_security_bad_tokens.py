"""Unauthenticated callers cannot grow the audit log without bound.

Found: every bad bearer token wrote a hash-chained `api.authenticate denied` audit row (200
rows in 6 s from one client), which on PostgreSQL can never be deleted.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.test import Client

from portal.access.actors import Actor
from portal.access.api_tokens import create_token
from portal.access.models import CredentialFailure
from portal.audit.models import AuditEvent
from portal.jobs import retention

PATH = "/api/queue/dead-letter"
LIMIT = 5


def bearer(value):
    return {"HTTP_AUTHORIZATION": f"Bearer {value}"}


def counters():
    return CredentialFailure.objects


@pytest.fixture
def limits(settings):
    settings.API_AUTH_FAILURE_LIMIT = LIMIT
    settings.API_AUTH_FAILURE_WINDOW_SECONDS = 300
    return settings


@pytest.fixture
def viewer_token(personas):
    return create_token(Actor.system("tests"), personas["viewer"].username, "viewer")[1]


def age_counters(seconds=3600):
    counters().update(window_start=F("window_start") - timedelta(seconds=seconds))


# --- the reproduction, as found -------------------------------------------------------------


@pytest.mark.django_db
def test_reproduction_200_bad_tokens_write_no_audit_rows(client):
    for attempt in range(200):
        client.get(PATH, REMOTE_ADDR="203.0.113.9", **bearer(f"fgp_deadbeef_guess{attempt}"))
    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db
def test_reproduction_bad_tokens_are_rate_limited_with_retry_after(client, limits):
    statuses = []
    for attempt in range(LIMIT + 3):
        response = client.get(
            PATH, REMOTE_ADDR="203.0.113.9", **bearer(f"fgp_deadbeef_guess{attempt}")
        )
        statuses.append(response.status_code)
    assert statuses == [401] * LIMIT + [429] * 3
    assert response.json()["error"] == "too_many_failures"
    assert 1 <= int(response["Retry-After"]) <= 300


# --- one counted event per window -----------------------------------------------------------


@pytest.mark.django_db
def test_a_burst_is_one_counted_row_per_source_and_window(client, limits):
    for attempt in range(LIMIT + 10):
        client.get(PATH, REMOTE_ADDR="203.0.113.9", **bearer(f"fgp_deadbeef_guess{attempt}"))
    by_address = counters().get(scope="address")
    assert (by_address.key, by_address.count, by_address.refused) == ("203.0.113.9", LIMIT, 10)
    assert by_address.last_path == PATH
    by_prefix = counters().get(scope="token_prefix")
    assert (by_prefix.key, by_prefix.count) == ("fgp_deadbeef", LIMIT)


@pytest.mark.django_db
def test_the_next_window_starts_afresh(client, limits):
    for attempt in range(LIMIT):
        client.get(PATH, REMOTE_ADDR="203.0.113.9", **bearer(f"fgp_deadbeef_g{attempt}"))
    assert (
        client.get(PATH, REMOTE_ADDR="203.0.113.9", **bearer("fgp_deadbeef_more")).status_code
        == 429
    )
    age_counters()
    assert (
        client.get(PATH, REMOTE_ADDR="203.0.113.9", **bearer("fgp_deadbeef_more")).status_code
        == 401
    )
    assert counters().filter(scope="address").count() == 2  # one row per window


@pytest.mark.django_db
def test_a_flooding_address_is_refused_even_with_a_good_token(client, limits, viewer_token):
    for attempt in range(LIMIT):
        client.get(PATH, REMOTE_ADDR="203.0.113.9", **bearer(f"fgp_deadbeef_g{attempt}"))
    assert client.get(PATH, REMOTE_ADDR="203.0.113.9", **bearer(viewer_token)).status_code == 429
    assert client.get(PATH, REMOTE_ADDR="198.51.100.1", **bearer(viewer_token)).status_code == 200


@pytest.mark.django_db
def test_a_known_prefix_is_limited_across_addresses_but_its_owner_still_gets_in(
    client, limits, viewer_token
):
    prefix = viewer_token.rsplit("_", 1)[0]
    statuses = [
        client.get(
            PATH, REMOTE_ADDR=f"203.0.113.{host}", **bearer(f"{prefix}_wrong{host}")
        ).status_code
        for host in range(1, LIMIT + 3)
    ]
    assert statuses == [401] * LIMIT + [429] * 2
    assert client.get(PATH, REMOTE_ADDR="192.0.2.7", **bearer(viewer_token)).status_code == 200


@pytest.mark.django_db
def test_a_foreign_credential_is_never_stored(client, limits):
    secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"
    assert client.get(PATH, REMOTE_ADDR="203.0.113.9", **bearer(secret)).status_code == 401
    stored = " ".join(f"{row.key} {row.last_reason} {row.last_path}" for row in counters().all())
    assert "eyJ" not in stored and "c2Vj" not in stored
    assert set(counters().values_list("key", flat=True)) == {"203.0.113.9", "(not a portal token)"}


@pytest.mark.django_db
def test_posts_without_a_token_are_counted_not_audited(client, limits):
    statuses = [
        client.post("/api/queue/retry-all", REMOTE_ADDR="203.0.113.9").status_code
        for _ in range(LIMIT + 1)
    ]
    assert statuses == [401] * LIMIT + [429]
    assert AuditEvent.objects.count() == 0
    assert counters().get(scope="address").count == LIMIT + 1


@pytest.mark.django_db
def test_the_limit_is_per_real_address_behind_the_proxy(client, limits):
    limits.TRUSTED_PROXIES = ["10.0.0.0/24"]
    for attempt in range(LIMIT):
        client.get(
            PATH,
            REMOTE_ADDR="10.0.0.5",
            HTTP_X_FORWARDED_FOR=f"192.0.2.{attempt}, 203.0.113.9",
            **bearer(f"fgp_deadbeef_g{attempt}"),
        )
    spoofing = client.get(
        PATH,
        REMOTE_ADDR="10.0.0.5",
        HTTP_X_FORWARDED_FOR="192.0.2.99, 203.0.113.9",
        **bearer("fgp_0badc0de_x"),
    )
    assert spoofing.status_code == 429
    neighbour = client.get(
        PATH,
        REMOTE_ADDR="10.0.0.5",
        HTTP_X_FORWARDED_FOR="203.0.113.10",
        **bearer("fgp_0badc0de_y"),
    )
    assert neighbour.status_code == 401


@pytest.mark.django_db
def test_ipv6_callers_share_their_64(client, limits):
    for host in range(1, LIMIT + 2):
        response = client.get(
            PATH, REMOTE_ADDR=f"2001:db8:1:2::{host:x}", **bearer(f"fgp_0badc0de_{host}")
        )
    assert response.status_code == 429
    assert counters().get(scope="address").key == "2001:db8:1:2::/64"


@pytest.mark.django_db(transaction=True)
def test_concurrent_processes_count_every_failure(limits):
    """Counts are exact across connections (the database, not a per-process cache)."""
    limits.API_AUTH_FAILURE_LIMIT = 1000
    threads, errors = 6, []
    per_thread = 8

    def hammer(index):
        try:
            caller = Client()
            for attempt in range(per_thread):
                status = caller.get(
                    PATH, REMOTE_ADDR="203.0.113.9", **bearer(f"fgp_deadbeef_{index}x{attempt}")
                ).status_code
                assert status == 401
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=hammer, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors
    assert counters().get(scope="address").count == threads * per_thread
    assert counters().get(scope="token_prefix").count == threads * per_thread


@pytest.mark.django_db
def test_old_windows_are_pruned(client, limits):
    client.get(PATH, REMOTE_ADDR="203.0.113.9", **bearer("fgp_deadbeef_x"))
    kept_30_days = retention.RETENTIONS["access.CredentialFailure"]
    assert retention.prune(kept_30_days) == 0
    age_counters(seconds=31 * 86_400)
    assert retention.prune(kept_30_days) == 2


@pytest.mark.django_db
def test_a_nul_in_the_path_or_token_is_counted_not_a_500(client, limits):
    # Found by the API fuzz test on PostgreSQL, whose text columns refuse NUL: the counter
    # row's path (and a token prefix) came straight from the request.
    client.raise_request_exception = False
    for _ in range(LIMIT + 1):
        response = client.post(
            "/api/event-endpoints/%00x/resume", REMOTE_ADDR="203.0.113.9", **bearer("fgp_\x00ab")
        )
    assert response.status_code == 429
    row = counters().get(scope=CredentialFailure.Scope.ADDRESS)
    assert row.count == LIMIT and row.refused == 1
    assert "\x00" not in row.last_path and row.last_path.endswith("\ufffdx/resume")
