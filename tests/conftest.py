from __future__ import annotations

import os

import pytest

# Playwright's sync API keeps an event loop in the main thread; Django would otherwise refuse
# ORM calls from tests that also drive the browser (stack-notes.md §5).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


# Named personas, one per role, for permission tests.
PERSONAS = {
    "viewer": "vera-viewer",
    "support": "sam-support",
    "operator": "otto-operator",
    "admin": "ada-admin",
}
PERSONA_PASSWORD = "correct horse battery staple 42"


def make_persona(role: str):  # noqa: ANN201
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(PERSONAS[role], password=PERSONA_PASSWORD)
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def vera_viewer(db):  # noqa: ANN001, ANN201
    return make_persona("viewer")


@pytest.fixture
def sam_support(db):  # noqa: ANN001, ANN201
    return make_persona("support")


@pytest.fixture
def otto_operator(db):  # noqa: ANN001, ANN201
    return make_persona("operator")


@pytest.fixture
def ada_admin(db):  # noqa: ANN001, ANN201
    return make_persona("admin")


@pytest.fixture
def personas(db):  # noqa: ANN001, ANN201
    """Every persona, by role."""
    return {role: make_persona(role) for role in PERSONAS}
