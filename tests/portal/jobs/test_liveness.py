"""Worker liveness: the heartbeat's age, as the worker pods' probe command reads it."""

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from portal.jobs.models import WorkerHeartbeat
from portal.jobs.runner import beat

pytestmark = pytest.mark.django_db


def test_worker_health_command():
    with pytest.raises(CommandError, match="ever reported"):
        call_command("worker_health")
    WorkerHeartbeat.objects.create(
        worker="h:1", last_seen=timezone.now() - timezone.timedelta(minutes=10)
    )
    with pytest.raises(CommandError, match=r"60\d s ago"):
        call_command("worker_health")
    beat()
    call_command("worker_health")
