import io

import pytest
from django.core.management import CommandError, call_command

from integrations.microsoft.models import GraphCall, Subscription, SyncState
from portal.audit.models import AuditEvent
from portal.jobs.models import Job

pytestmark = pytest.mark.django_db


def test_it_refuses_without_confirmation():
    with pytest.raises(CommandError, match="--confirm"):
        call_command("seed_scale")


def test_a_small_seed_has_the_right_shape_and_a_valid_audit_chain():
    call_command("seed_scale", "--confirm", "--scale", "0.001", stdout=io.StringIO())
    assert Job.objects.count() == 1000
    assert AuditEvent.objects.count() == 1000
    assert Subscription.objects.count() == 100
    assert SyncState.objects.count() == 50
    assert GraphCall.objects.count() == 2000
    out = io.StringIO()
    call_command("verify_audit_chain", stdout=out)
    assert "1000 events verified" in out.getvalue()
