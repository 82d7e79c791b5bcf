"""The migration that puts people's API tokens and service clients' tokens into one table
(access 0011, api 0003): tokens issued before it, with the hashing and prefixes of the time,
authenticate afterwards with their original values, keeping their owner, scopes, expiry and
revocation; refused ones stay refused; and the migration can be reversed without losing one."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from portal.access import api_tokens, bearer_tokens
from portal.access.actors import Actor
from portal.access.models import BearerToken

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("access", "0010_manage_approvals_permission"), ("api", "0002_idempotencyrecord")]


def migrate(targets=None):
    """Migrate to `targets` (default: the latest); returns the models of that state."""
    executor = MigrationExecutor(connection)
    targets = targets or executor.loader.graph.leaf_nodes()
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


@pytest.fixture
def before_merge():
    apps = migrate(BEFORE)
    yield apps
    migrate()


def old_value(kind_prefix):
    """A value as the code before the merge made it, and its stored form (SHA-256 hex)."""
    raw = f"{kind_prefix}{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"
    return raw, raw[:12], hashlib.sha256(raw.encode()).hexdigest()


def bearer(raw):
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_tokens_issued_before_the_merge_keep_working_and_refused_ones_stay_refused(before_merge):
    apps = before_merge
    ApiToken = apps.get_model("api", "ApiToken")
    ServiceClient = apps.get_model("access", "ServiceClient")
    ServiceClientToken = apps.get_model("access", "ServiceClientToken")
    now = timezone.now()
    viewer = get_user_model().objects.create_user("vera")
    viewer.groups.add(Group.objects.get(name="viewer"))
    gone = get_user_model().objects.create_user("gone", is_active=False)

    def person_token(user, name, scopes=(), **dates):
        raw, prefix, digest = old_value("fgp_")
        row = ApiToken.objects.create(
            user_id=user.pk,
            name=name,
            prefix=prefix,
            token_hash=digest,
            scopes=list(scopes),
            created_by="ada",
            **dates,
        )
        return raw, row

    def client_token(client, **dates):
        raw, prefix, digest = old_value("fgs_")
        row = ServiceClientToken.objects.create(
            client=client, prefix=prefix, token_hash=digest, created_by="ada", **dates
        )
        return raw, row

    # People's tokens deleted before the merge leave a gap: the ids after it are kept as they are.
    for deleted in range(3):
        person_token(viewer, f"deleted {deleted}")[1].delete()
    scoped_raw, scoped = person_token(
        viewer,
        "on-call scripts",
        ["read_events"],
        expires_at=now + timedelta(days=30),
        last_used_at=now - timedelta(days=2),
    )
    ApiToken.objects.filter(pk=scoped.pk).update(created_at=now - timedelta(days=60))
    role_raw, role_token = person_token(viewer, "dashboards")
    revoked_raw, _ = person_token(viewer, "revoked", revoked_at=now - timedelta(hours=1))
    expired_raw, _ = person_token(viewer, "expired", expires_at=now - timedelta(minutes=1))
    inactive_raw, _ = person_token(gone, "left the company")

    dispatch = ServiceClient.objects.create(
        name="dispatch-worker", scopes=["events:read"], created_by="ada"
    )
    fleet_raw, fleet_row = client_token(dispatch, expires_at=now + timedelta(days=90))
    grace_raw, _ = client_token(dispatch, expires_at=now - timedelta(minutes=5))
    cut_raw, _ = client_token(dispatch, revoked_at=now - timedelta(days=1))
    retired = ServiceClient.objects.create(
        name="retired", scopes=["events:read"], created_by="ada", revoked_at=now
    )
    retired_raw, _ = client_token(retired)

    migrate()

    scoped_after = bearer_tokens.authenticate(scoped_raw)
    assert scoped_after is not None
    assert (scoped_after.pk, scoped_after.user, scoped_after.client) == (scoped.pk, viewer, None)
    assert scoped_after.name == "on-call scripts" and scoped_after.scopes == ["read_events"]
    assert scoped_after.expires_at == scoped.expires_at
    assert scoped_after.created_at == now - timedelta(days=60)
    assert scoped_after.prefix == scoped_raw[:12] and scoped_after.created_by == "ada"
    assert bearer_tokens.authenticate(role_raw).pk == role_token.pk

    fleet_after = bearer_tokens.authenticate(fleet_raw)
    assert fleet_after is not None
    assert (fleet_after.client.name, fleet_after.user) == ("dispatch-worker", None)
    assert fleet_after.expires_at == fleet_row.expires_at and fleet_after.scopes == []

    for refused in (revoked_raw, expired_raw, inactive_raw, grace_raw, cut_raw, retired_raw):
        assert bearer_tokens.authenticate(refused) is None
    assert BearerToken.objects.of_people().count() == 5
    assert BearerToken.objects.filter(client__isnull=False).count() == 4

    # Through the API: the scopes still narrow what each may do (401s and 403s as before).
    web = Client()
    assert web.get("/api/events", **bearer(scoped_raw)).status_code == 200
    assert web.get("/api/queue/dead-letter", **bearer(scoped_raw)).status_code == 403
    assert web.get("/api/queue/dead-letter", **bearer(role_raw)).status_code == 200
    assert web.get("/api/events", **bearer(fleet_raw)).status_code == 200
    assert web.get("/api/queue/dead-letter", **bearer(fleet_raw)).status_code == 403
    for refused in (revoked_raw, expired_raw, grace_raw, retired_raw):
        answer = web.get("/api/events", **bearer(refused))
        assert answer.status_code == 401 and refused not in answer.content.decode()

    # New tokens take ids after the copied ones (the id sequence was moved on).
    _new, new_raw = api_tokens.create_token(Actor.system("tests"), "vera", "new")
    assert bearer_tokens.authenticate(new_raw).pk > max(scoped.pk, role_token.pk)


def test_reversing_the_merge_gives_every_token_back(before_merge):
    apps = before_merge
    ApiToken = apps.get_model("api", "ApiToken")
    ServiceClient = apps.get_model("access", "ServiceClient")
    ServiceClientToken = apps.get_model("access", "ServiceClientToken")
    user = get_user_model().objects.create_user("vera")
    person_raw, prefix, digest = old_value("fgp_")
    ApiToken.objects.create(
        user_id=user.pk, name="n", prefix=prefix, token_hash=digest, created_by="t"
    )
    client = ServiceClient.objects.create(name="c", scopes=["events:read"], created_by="t")
    client_raw, prefix, digest = old_value("fgs_")
    ServiceClientToken.objects.create(
        client=client, prefix=prefix, token_hash=digest, created_by="t"
    )

    migrate()
    apps = migrate(BEFORE)

    hashes = {
        "people": list(apps.get_model("api", "ApiToken").objects.values_list("token_hash")),
        "clients": list(
            apps.get_model("access", "ServiceClientToken").objects.values_list("token_hash")
        ),
    }
    assert hashes == {
        "people": [(hashlib.sha256(person_raw.encode()).hexdigest(),)],
        "clients": [(hashlib.sha256(client_raw.encode()).hexdigest(),)],
    }
