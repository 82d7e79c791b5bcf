"""django-q2's ORM broker, woken instead of polled on PostgreSQL.

django-q2's ORM broker looks for tasks, and when there are none sleeps Q_CLUSTER["poll"]
before looking again: each job hop of a change (drain → sync job → delivery) waited for
that poll. Here a worker with nothing to do waits on `LISTEN` instead, for at most the
same poll (so a lost wake-up costs no more than before, and the cluster still sees its stop
signal), and `wake_workers(queue_key)` NOTIFYs after a dispatching transaction commits.

Each django-q2 queue has a channel of its own (`channel_for`): the event deliveries' queue
and the main (Graph) queue wake their own workers, and a wake-up of one is never spent on
the other's.

A NOTIFY is a durable commit of its own, so each process NOTIFYs a channel at most every
WAKE_INTERVAL_SECONDS (the inbox's receivers too: integrations/microsoft/notifications.py).
What a process commits meanwhile is found because every listener, after each wake-up,
keeps looking every LINGER_POLL for WAKE_INTERVAL_SECONDS + LINGER_POLL: a commit without
a NOTIFY of its own follows, within the interval, a NOTIFY of the same process on the same
channel, which woke the listener. With Redis the broker's blocking pop wakes workers; on
SQLite they poll.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import psycopg
from django.db import DatabaseError, connection
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from psycopg import sql

logger = logging.getLogger(__name__)

WAKE_INTERVAL_SECONDS = 0.25
LINGER_POLL = 0.05
_last_wake: dict[str, float] = {}


class Listener:
    """LISTEN on a channel with a connection of its own (PostgreSQL, psycopg 3), reconnecting
    lazily; `wait()` returns early when someone NOTIFYs it."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._conn: Any = None

    def _connect(self) -> Any:
        params = connection.get_connection_params()
        keep = ("dbname", "user", "password", "host", "port", "sslmode", "options")
        conn = psycopg.connect(
            **{k: v for k, v in params.items() if k in keep and v not in (None, "")},
            autocommit=True,
            connect_timeout=5,
        )
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        return conn

    def wait(self, timeout: float) -> bool:
        """True when woken by a notification, False on timeout (or without a connection)."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            woken = False
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                woken = True
            if woken:  # one wake-up for all the commits queued meanwhile
                for _ in self._conn.notifies(timeout=0.0):
                    pass
            return woken
        except Exception:  # the server restarted: poll until it is back
            logger.info("No LISTEN %s connection; polling", self.channel, exc_info=True)
            self.close()
            time.sleep(timeout)
            return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # a dead connection has nothing to close
                self._conn.close()
            self._conn = None


def notify(channel: str) -> None:
    """NOTIFY `channel`'s listeners (PostgreSQL), at most every WAKE_INTERVAL_SECONDS per
    process, outside any transaction's commit. Never fails the caller, whose work committed:
    the listeners' poll finds it anyway."""
    if connection.vendor != "postgresql":
        return
    clock = time.monotonic()
    last = _last_wake.get(channel)
    if last is not None and clock - last < WAKE_INTERVAL_SECONDS:
        return
    _last_wake[channel] = clock
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [channel])
    except DatabaseError:
        logger.warning("Could not NOTIFY %s (its listeners poll)", channel, exc_info=True)


def channel_for(list_key: str) -> str:
    """The LISTEN/NOTIFY channel of one django-q2 queue (its broker list key)."""
    return f"jobs:{list_key}"[:63]  # PostgreSQL's identifier limit


def wake_workers(list_key: str) -> None:
    """Wake the idle workers of one queue (ORM broker): called after a dispatch commits."""
    notify(channel_for(list_key))


class WakingORM(ORM):
    """The ORM broker whose idle wait ends at a NOTIFY on its queue's channel
    (Q_CLUSTER["broker_class"])."""

    def __init__(self, list_key: str | None = None) -> None:
        super().__init__(list_key=list_key)
        self._listener = (
            Listener(channel_for(self.list_key)) if connection.vendor == "postgresql" else None
        )
        self._linger_until = 0.0

    def dequeue(self) -> list[tuple[Any, str]] | None:
        if self._listener is None:
            return super().dequeue()
        due = self.get_connection().filter(key=self.list_key, lock__lt=timezone.now())
        if due.exists():
            tasks = super().dequeue()
            if tasks:
                self._linger_until = time.monotonic() + WAKE_INTERVAL_SECONDS + LINGER_POLL
            return tasks
        if time.monotonic() < self._linger_until:
            time.sleep(LINGER_POLL)
        elif self._listener.wait(Conf.POLL):
            # Woken: the waker's next commits within its interval may come without a NOTIFY.
            self._linger_until = time.monotonic() + WAKE_INTERVAL_SECONDS + LINGER_POLL
        return None
