"""Run the runbook's own curl commands, as printed, against a live portal.

The commands are read from docs/runbook-legacy.md (a copy of the runbook this portal
replaces); only the host, port and token are substituted, as an on-call engineer would.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from integrations.microsoft.models import MonitoredUser, SyncState
from portal.access.actors import Actor
from portal.access.api_tokens import create_token
from portal.jobs.models import Job

RUNBOOK = Path(settings.BASE_DIR) / "docs" / "runbook-legacy.md"
SECTIONS = [
    "### 2. Re-sync Messages",
    "### 3. Restart Failed Jobs",
    "## Monitoring",
    "### Debug Sync Issues",
]

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl"),
]


def runbook_commands() -> list[str]:
    text = RUNBOOK.read_text()
    commands = []
    for heading in SECTIONS:
        section = text.split(heading, 1)[1]
        level = heading.split(" ", 1)[0]  # "##" or "###": the section ends at the next one
        section = re.split(rf"\n#{{2,{len(level)}}} ", section, maxsplit=1)[0]
        for block in re.findall(r"```bash\n(.*?)```", section, re.S):
            joined = block.replace("\\\n", " ")
            commands += [
                line.strip()
                for line in joined.splitlines()
                if line.strip().startswith("curl") and "localhost:3000" in line
            ]
    return commands


def test_the_runbook_has_the_commands_we_expect():
    commands = runbook_commands()
    paths = {re.search(r"localhost:3000(/\S*)", c).group(1) for c in commands}
    assert paths == {
        "/api/sync/reset",
        "/api/sync/full",
        "/api/queue/dead-letter",
        "/api/queue/retry/JOB_ID",
        "/api/queue/retry-all",
        "/api/metrics/queue",
        "/api/metrics/sync",
        "/api/sync/state/user@example.com/messages",
        "/api/sync/delta",
    }


def test_each_curl_command_works_as_printed(live_server, personas):
    user = MonitoredUser.objects.create(
        identifier="user@example.com", upn="user@example.com", graph_id="0f1e2d3c-bbbb"
    )
    SyncState.objects.create(monitored_user=user, kind="messages", status="idle")
    dead = Job.objects.create(job_type="jobs.noop", status=Job.Status.DEAD, last_error="boom")
    token = create_token(Actor.system("tests"), personas["operator"].username, "runbook")[1]
    host = live_server.url.removeprefix("http://")
    for command in runbook_commands():
        command = (
            command.replace("localhost:3000", host)
            .replace("YOUR_JWT", token)
            .replace("JOB_ID", str(dead.pk))
        )
        if "| jq" in command:
            # The runbook pipes the metrics into jq: the value it reads must be there.
            result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, (command, result.stderr)
            assert result.stdout.strip() not in ("", "null"), (command, result.stdout)
            continue
        command = command.replace("curl ", "curl -sS -o /dev/stderr -w '%{http_code}' ", 1)
        result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
        status = result.stdout.strip()
        assert status.startswith("2"), (command, status, result.stderr)
    assert Job.objects.get(pk=dead.pk).status != Job.Status.DEAD
