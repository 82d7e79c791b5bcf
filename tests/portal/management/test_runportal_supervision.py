"""runportal supervises what it starts: an exited worker is started again and the portal
goes on running jobs; SIGTERM stops every process it started, their children too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

from portal.jobs.models import Job
from portal.jobs.runner import enqueue
from tests.conftest import free_port, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)


def wait_until(condition: Callable[[], object], timeout: float, what: str, portal: Portal) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; runportal said: {portal.lines}")
        time.sleep(0.2)


def processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live process (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if fields[0] != "Z":  # a zombie is dead, only not reaped yet
                found[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return found


class Portal:
    """`manage.py runportal --no-emulator` on the test database, its output collected."""

    def __init__(self, worker_min_uptime: float) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(settings.BASE_DIR / "manage.py"),
                "runportal",
                "--no-emulator",
                "--port",
                str(free_port()),
            ],
            env=subprocess_env(
                Q_WORKERS="1", RUNPORTAL_WORKER_MIN_UPTIME_SECONDS=str(worker_min_uptime)
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def started_pids(self) -> dict[str, int]:
        """Each process runportal started, by name, from its 'started NAME (pid N)' lines."""
        pids = {}
        for line in self.lines:
            if line.startswith("started ") and "(pid " in line:
                name = line.split()[1]
                pids[name] = int(line.rsplit("(pid ", 1)[1].rstrip(")"))
        return pids


@pytest.fixture
def start_portal() -> Iterator[Callable[[float], Portal]]:
    started: list[Portal] = []

    def start(worker_min_uptime: float) -> Portal:
        started.append(Portal(worker_min_uptime))
        return started[-1]

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.terminate()  # runportal stops what it started
            try:
                running.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait()
        running.reader.join(timeout=10)
        assert running.process.stdout is not None
        running.process.stdout.close()


def job_succeeded(job: Job) -> bool:
    job.refresh_from_db()
    return job.status == Job.Status.SUCCEEDED


def test_an_exited_worker_is_started_again_and_sigterm_stops_everything(start_portal):
    portal = start_portal(worker_min_uptime=0.5)
    # runportal supervises once the web server answers: it then prints its start-up box.
    wait_until(lambda: portal.said("Stop: Ctrl-C"), 60, "runportal to start", portal)
    supervising_since = time.monotonic()  # runportal counts the worker's uptime from here
    first = enqueue("jobs.noop", created_by="test")
    wait_until(lambda: job_succeeded(first), 60, "the worker to run a job", portal)
    worker = portal.started_pids()["worker"]
    time.sleep(max(0.0, supervising_since + 1.5 - time.monotonic()))  # past the 0.5 s

    # What the cluster guard does to a cluster that lost a process: it exits. SIGKILL of the
    # whole cluster is the harshest form of it.
    os.killpg(worker, signal.SIGKILL)
    wait_until(
        lambda: portal.said("worker exited with status -9; starting a new one."),
        30,
        "runportal to notice",
        portal,
    )
    second = enqueue("jobs.noop", created_by="test")
    wait_until(lambda: job_succeeded(second), 60, "the new worker to run a job", portal)
    assert portal.process.poll() is None, portal.lines  # web and drain went on running

    # Each process runportal started leads a process group of its own, its children in it.
    children = {pid for pid, (parent, _) in processes().items() if parent == portal.process.pid}
    # web, drain, the event deliveries' worker and the new worker
    assert len(children) == 4, (children, portal.lines)
    portal.process.send_signal(signal.SIGTERM)
    assert portal.process.wait(timeout=30) == 0, portal.lines
    assert portal.said("Stopped.")
    left = [pid for pid, (_, group) in processes().items() if group in children | {worker}]
    assert not left, f"still running after runportal stopped: {left}; {portal.lines}"


def test_a_worker_that_exits_right_after_its_start_stops_the_portal(start_portal):
    # Started again, it would most likely fail again, in a loop nobody sees.
    portal = start_portal(worker_min_uptime=600)
    wait_until(lambda: portal.said("Portal on http"), 60, "runportal to start", portal)
    started = portal.started_pids()
    os.killpg(started["worker"], signal.SIGKILL)
    assert portal.process.wait(timeout=30) != 0, portal.lines
    assert portal.said("worker exited with status -9; stopping."), portal.lines
    assert not portal.said("starting a new one")
    left = [pid for pid, (_, group) in processes().items() if group in set(started.values())]
    assert not left, f"still running after runportal stopped: {left}; {portal.lines}"
