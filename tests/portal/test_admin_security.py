"""The Django admin can neither run code nor change anything outside the
audit log.

The first case is the hole as it was found: an admin-role user added a django-q2 Schedule
naming `subprocess.getoutput`, and the worker ran it.
"""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from axes.models import AccessAttempt
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.db import models
from django.forms.models import model_to_dict
from django.urls import reverse
from django.utils import timezone
from django_q.models import Failure, OrmQ, Schedule, Success

from integrations.microsoft.models import MonitoredUser
from portal.access.backends import ADMIN_MODEL_PERMISSIONS
from portal.audit.models import AuditEvent
from tests.conftest import PERSONAS

pytestmark = pytest.mark.django_db


def test_reproduction_an_admin_cannot_schedule_a_callable(client, ada_admin):
    client.force_login(ada_admin)
    response = client.post(
        "/admin/django_q/schedule/add/",
        {
            "name": "x",
            "func": "subprocess.getoutput",
            "args": "'env'",
            "schedule_type": "O",
            "repeats": "1",
            "next_run_0": "2030-01-01",
            "next_run_1": "00:00:00",
            "cluster": "",
            "kwargs": "",
            "hook": "",
            "intended_date_kind": "",
            "cron": "",
            "minutes": "",
            "_save": "Save",
        },
    )
    assert response.status_code in (403, 404)
    assert not Schedule.objects.filter(func="subprocess.getoutput").exists()
    assert not ada_admin.has_perm("django_q.add_schedule")


def test_the_worker_queue_and_accounts_are_not_in_the_admin():
    for model in (Schedule, Success, Failure, OrmQ, User, Group):
        assert not admin.site.is_registered(model), model


def test_the_admin_role_holds_an_explicit_allow_list_of_model_permissions(ada_admin):
    assert ada_admin.has_perm("jobs.view_job")
    assert not ada_admin.has_perm("jobs.change_job")
    assert not ada_admin.has_perm("auth.change_user")
    assert not ada_admin.has_perm("audit.delete_auditevent")
    assert not ada_admin.has_perm("axes.delete_accesslog")
    for perm in ADMIN_MODEL_PERMISSIONS:
        assert perm.split(".")[1].startswith(("view_", "add_", "change_", "delete_")), perm


# ------------------------------------------------------------------- the walk over the admin

CALLABLE_FIELD_NAMES = {
    "func",
    "hook",
    "callable",
    "task",
    "handler",
    "function",
    "payload",
    "module",
    "command",
    "job_type",
}


def _value(field: models.Field, n: int):
    if field.choices:
        return field.choices[0][0]
    if isinstance(field, models.BooleanField):
        return False
    if isinstance(field, (models.DateTimeField,)):
        return timezone.now()
    if isinstance(field, models.DateField):
        return datetime.date.today()
    if isinstance(field, models.DecimalField):
        return decimal.Decimal("1")
    if isinstance(field, (models.IntegerField, models.FloatField, models.DurationField)):
        return datetime.timedelta(seconds=1) if isinstance(field, models.DurationField) else 1
    if isinstance(field, models.UUIDField):
        return uuid.uuid4()
    if isinstance(field, models.JSONField):
        return {}
    if isinstance(field, models.BinaryField):
        return b"x"
    if isinstance(field, models.GenericIPAddressField):
        return "192.0.2.1"
    if isinstance(field, models.EmailField):
        return f"walk{n}@example.com"
    if isinstance(field, (models.CharField, models.TextField)):
        return f"walk-{n}"[: field.max_length or 50]
    raise TypeError(f"no value for {field!r}")


# Nullable relations a model's check constraint still needs one of (the one filled in here).
ONE_OF_RELATIONS = {"access.BearerToken": "user"}


def make(model: type[models.Model], n: int = 0) -> models.Model:
    """One row of any model, with every required field filled."""
    values = {}
    for field in model._meta.concrete_fields:
        if field.primary_key and (field.has_default() or isinstance(field, models.AutoField)):
            continue
        if field.is_relation:
            if field.null and ONE_OF_RELATIONS.get(model._meta.label) != field.name:
                continue
            values[field.name] = make(field.related_model, n + 1)
            continue
        if field.has_default() or field.null or (field.blank and not field.unique):
            continue
        values[field.name] = _value(field, n)
    return model.objects.create(**values)


def snapshot(model: type[models.Model], newest_before: int) -> list[dict]:
    rows = model.objects.order_by("pk")
    if model is AuditEvent:  # the walk's own denials are audit rows too
        rows = rows.exclude(pk__gt=newest_before, outcome="denied")
    return [dict(row) for row in rows.values()]


def _form_data(obj: models.Model) -> dict:
    data = {}
    for key, value in model_to_dict(obj).items():
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                data[key] = "on"
            continue
        if isinstance(value, datetime.datetime):
            data[key + "_0"] = value.date().isoformat()
            data[key + "_1"] = value.strftime("%H:%M:%S")
        elif isinstance(value, (list, tuple)):
            data[key] = [getattr(v, "pk", v) for v in value]
        else:
            data[key] = str(getattr(value, "pk", value))
    return data


REGISTERED = sorted(admin.site._registry, key=lambda m: m._meta.label)


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m._meta.label)
@pytest.mark.parametrize("role", list(PERSONAS))
def test_no_admin_write_without_an_audit_event(client, personas, model, role):
    """Every registered model x add / change / delete (page and bulk action) x each role:
    a write either does not happen or is accompanied by a successful audit event."""
    client.force_login(personas[role])
    obj = make(model)
    prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
    attempts = [
        (reverse(f"{prefix}_add"), {**_form_data(obj), "_save": "Save"}),
        (reverse(f"{prefix}_change", args=[obj.pk]), {**_form_data(obj), "_save": "Save"}),
        (reverse(f"{prefix}_delete", args=[obj.pk]), {"post": "yes"}),
        (
            reverse(f"{prefix}_changelist"),
            {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
        ),
    ] + [  # and every action the page offers
        (
            reverse(f"{prefix}_changelist"),
            {"action": getattr(action, "__name__", action), "_selected_action": [obj.pk]},
        )
        for action in admin.site._registry[model].actions or ()
    ]
    for url, data in attempts:
        newest = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        before_rows = snapshot(model, newest)
        before_audit = AuditEvent.objects.exclude(outcome="denied").count()
        response = client.post(url, data)
        assert response.status_code < 500, (url, response.status_code)
        if snapshot(model, newest) != before_rows:
            assert AuditEvent.objects.exclude(outcome="denied").count() > before_audit, (
                f"{role} changed {model._meta.label} through {url} without an audit event"
            )


def test_a_lockout_is_cleared_through_the_audited_service(client, personas):
    attempt = make(AccessAttempt)
    url = reverse("admin:axes_accessattempt_changelist")
    client.force_login(personas["operator"])
    client.post(url, {"action": "clear_selected", "_selected_action": [attempt.pk]})
    assert AccessAttempt.objects.filter(pk=attempt.pk).exists()
    client.force_login(personas["admin"])
    client.post(url, {"action": "clear_selected", "_selected_action": [attempt.pk]})
    assert not AccessAttempt.objects.filter(pk=attempt.pk).exists()
    event = AuditEvent.objects.get(action="access.clear_lockouts", outcome="success")
    assert event.actor_name == PERSONAS["admin"]


def test_monitored_users_are_never_deleted_in_the_admin_only_stopped(client, ada_admin):
    user = MonitoredUser.objects.create(identifier="kim@example.com")
    client.force_login(ada_admin)
    url = reverse("admin:microsoft_monitoreduser_delete", args=[user.pk])
    assert client.post(url, {"post": "yes"}).status_code == 403
    client.post(
        reverse("admin:microsoft_monitoreduser_changelist"),
        {"action": "stop_monitoring", "_selected_action": [user.pk]},
    )
    user.refresh_from_db()
    assert not user.is_active
    assert AuditEvent.objects.filter(action="monitored_user.remove", outcome="success").exists()


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m._meta.label)
def test_no_admin_page_can_name_a_callable(client, ada_admin, model):
    client.force_login(ada_admin)
    obj = make(model)
    prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
    model_admin = admin.site._registry[model]
    for url in (reverse(f"{prefix}_add"), reverse(f"{prefix}_change", args=[obj.pk])):
        response = client.get(url)
        assert response.status_code in (200, 302, 403), url
        form = response.context.get("adminform") if response.context else None
        if form is None:
            continue
        editable = {name for name in form.form.fields}
        assert not editable & CALLABLE_FIELD_NAMES, (model._meta.label, editable)
    for name in getattr(model_admin, "actions", None) or ():
        assert callable(name) or hasattr(model_admin, name) or name == "delete_selected"
