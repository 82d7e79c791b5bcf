"""Fixtures of the approvals walk; the Graph ones (for connecting a tenant) are the
integration's."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from portal.access.actors import Actor
from portal.approvals import services
from portal.jobs.models import Job
from tests.conftest import PERSONA_PASSWORD
from tests.integrations.microsoft.conftest import (  # noqa: F401
    _fresh_process_state,
    graph_settings,
    q_sync,
)


def person(username: str, role: str):
    user = get_user_model().objects.create_user(username, password=PERSONA_PASSWORD)
    user.groups.add(Group.objects.get(name=role))
    return user


def actor_of(user) -> Actor:
    return Actor(kind="user", name=user.get_username(), role="", user=user)


@pytest.fixture
def olga_operator(db):
    """The second operator, who approves otto's requests."""
    return person("olga-operator", "operator")


@pytest.fixture
def abe_admin(db):
    return person("abe-admin", "admin")


@pytest.fixture
def covered(ada_admin):
    """The recommended policy, turned on by an admin in one step (bulk threshold 100)."""
    services.set_policy(actor_of(ada_admin), services.gate.recommended_keys(), 100)


def dead_jobs(count: int) -> None:
    Job.objects.bulk_create(
        Job(job_type="jobs.noop", status=Job.Status.DEAD, payload={}) for _ in range(count)
    )
