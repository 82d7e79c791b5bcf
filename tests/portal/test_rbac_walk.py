"""Walk every URL as anonymous, viewer, support, operator and admin, with GET and POST.

Allowed or denied must match the role matrix for the permission the view declares; every
denial must be a 403 (401 for the API, a sign-in redirect for anonymous pages) and audited;
nothing may answer 500.
"""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from portal.access import service_clients
from portal.access.actors import Actor
from portal.access.api_tokens import create_token
from portal.access.middleware import view_permission
from portal.access.models import ServiceClient
from portal.access.roles import MATRIX, SCOPES, permissions_of_scopes
from portal.audit.models import AuditEvent
from portal.jobs.models import BulkOperation, Job
from tests.conftest import PERSONAS

pytestmark = pytest.mark.django_db


def walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def concrete(route, ids):
    """A real path for a route pattern, filling parameters with existing objects' ids."""
    path = route.lstrip("^").rstrip("$").replace("\\Z", "").replace("\\", "")
    path = re.sub(r"<int:(\w+)>", lambda m: str(ids.get(m.group(1), 1)), path)
    path = re.sub(r"<(?:str|slug|path):(\w+)>", lambda m: str(ids.get(m.group(1), "x")), path)
    path = re.sub(r"<(\w+)>", lambda m: str(ids.get(m.group(1), "1")), path)
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(ids.get(m.group(1), "1")), path)
    return "/" + path


def routes():
    seen = set()
    for route, callback in walk(get_resolver().url_patterns):
        if route in seen or ("(?P<" in route and "admin" in route and "app_label" in route):
            continue
        seen.add(route)
        yield route, callback


def permission_for(callback, method):
    """What the view asks of this method: one URL may hold several API endpoints."""
    by_method = getattr(callback, "method_permissions", {})
    return by_method.get(method.upper(), view_permission(callback))


@pytest.fixture
def objects(db):
    job = Job.objects.create(job_type="jobs.noop", status=Job.Status.DEAD)
    operation = BulkOperation.objects.create(kind="retry", created_by="tests")
    return {
        "job_id": job.pk,
        "operation_id": operation.pk,
        "object_id": job.pk,
        "key": "SYNC_INTERVAL_MINUTES",
    }


@pytest.mark.parametrize("role", ["anonymous", *PERSONAS])
def test_every_url_answers_each_role_as_the_matrix_says(client, personas, objects, role, settings):
    # Anonymous POSTs to the API count as refused credentials; past the limit they are 429s.
    # The walk checks permissions, not that limit (tests/portal/api/test_security_bad_tokens.py).
    settings.API_AUTH_FAILURE_LIMIT = 10_000
    if role != "anonymous":
        client.force_login(personas[role])
    granted = MATRIX.get(role, frozenset())
    headers = {}
    if role != "anonymous":
        # People use the console with their session and the API with a token.

        raw = create_token(Actor.system("tests"), personas[role].username, "walk")[1]
        headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    problems = []
    checked = 0
    for route, callback in routes():
        path = concrete(route, objects)
        is_api = path.startswith("/api/")
        for method in ("get", "post"):
            permission = permission_for(callback, method)
            if role != "anonymous":
                client.force_login(personas[role])  # the walk signs out on /logout/
            before = AuditEvent.objects.filter(outcome="denied").count()
            response = getattr(client, method)(path, **(headers if is_api else {}))
            checked += 1
            status = response.status_code
            if status >= 500:
                problems.append(f"{method.upper()} {path}: {status}")
                continue
            if permission == "public":
                continue
            if role == "anonymous":
                if getattr(callback, "trusted_network", False):
                    continue  # open to API_TRUSTED_NETWORKS (the test client is 127.0.0.1)
                if is_api:
                    ok = status in (401, 405)
                else:
                    ok = status in (302, 405) and (
                        status == 405
                        or "/login/" in response["Location"]
                        or "/admin/login/" in response["Location"]
                    )
                if not ok:
                    problems.append(f"anonymous {method.upper()} {path}: {status}")
                continue
            allowed = permission in granted
            if not allowed:
                if status == 405:
                    continue  # the method check comes first and changes nothing
                if status != 403:
                    problems.append(f"{role} {method.upper()} {path}: {status}, expected 403")
                elif AuditEvent.objects.filter(outcome="denied").count() <= before:
                    problems.append(f"{role} {method.upper()} {path}: denial not audited")
            elif AuditEvent.objects.filter(outcome="denied").count() > before:
                # A 403 without a denial is a model admin being read-only, not the role check.
                problems.append(f"{role} {method.upper()} {path}: denied but {permission} granted")
    assert checked > 40
    assert problems == [], "\n".join(problems)


def test_the_tenant_connection_declares_its_own_permission():
    # Switching tenants is not rotating a secret: the walk above checks these URLs against
    # whoever holds connect_tenant.
    declared = {route: permission_for(cb, "post") for route, cb in routes()}
    connect = {r: p for r, p in declared.items() if "connect-tenant" in r}
    assert connect and set(connect.values()) == {"connect_tenant"}, connect


@pytest.mark.parametrize("scope", ["none", *SCOPES])
def test_every_api_url_answers_a_service_client_as_its_scopes_say(client, objects, scope):
    """Service clients: exactly their scopes' permissions on the API, never the console."""

    scopes = [scope] if scope != "none" else []
    row, raw = service_clients.create_client(
        Actor.system("tests"), "walker", scopes or list(SCOPES)[:1]
    )
    if not scopes:
        ServiceClient.objects.filter(pk=row.pk).update(scopes=[])
    granted = permissions_of_scopes(scopes)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    problems = []
    for route, callback in routes():
        path = concrete(route, objects)
        for method in ("get", "post"):
            permission = permission_for(callback, method)
            before = AuditEvent.objects.filter(outcome="denied").count()
            response = getattr(client, method)(path, **headers)
            status = response.status_code
            if status >= 500:
                problems.append(f"{method.upper()} {path}: {status}")
                continue
            if permission == "public" or status == 405:
                continue
            if not path.startswith("/api/"):
                # The console never accepts a client token: sign-in redirect, not a page.
                if permission != "use_django_admin" and not (
                    status == 302 and "/login/" in response["Location"]
                ):
                    problems.append(f"{scope} {method.upper()} {path}: {status} (console)")
                continue
            if getattr(callback, "trusted_network", False) and permission not in granted:
                continue
            if permission in granted:
                if status in (401, 403):
                    problems.append(
                        f"{scope} {method.upper()} {path}: {status}, {permission} is granted"
                    )
            elif status != 403:
                problems.append(f"{scope} {method.upper()} {path}: {status}, expected 403")
            elif AuditEvent.objects.filter(outcome="denied").count() <= before:
                problems.append(f"{scope} {method.upper()} {path}: denial not audited")
    assert problems == [], "\n".join(problems)
