"""django-q2's ORM broker, woken instead of polled on PostgreSQL.

django-q2's ORM broker looks for tasks, and when there are none sleeps Q_CLUSTER["poll"]
before looking again: each job hop of a change (drain → sync job → delivery) waited for
that poll. Here a worker with nothing to do waits on `LISTEN` instead, for at most the
same poll (so a lost wake-up costs no more than before, and the cluster still sees its stop
signal), and `wake_workers(queue_key)` NOTIFYs after a dispatching transaction commits.

Each django-q2 queue has a channel of its own (`channel_for`): the event deliveries' queue
and the main (Graph) queue wake their own workers, and a wake-up of one is never spent on
the other's.

Every dispatch NOTIFYs, right after its commit: a NOTIFY alone writes no WAL, so it costs
a round trip (measured on PostgreSQL 15: ~0.1 ms, against ~0.3-1.3 ms for a durable
INSERT's commit). An earlier version sent at most one NOTIFY per WAKE_INTERVAL (0.25 s) per
process and made listeners poll every 50 ms for a while after each wake-up to find what
was committed meanwhile; that poll put up to 50 ms on each hop of a change whose commit
followed another within the interval (bench/end_to_end's tail). With Redis the broker's
blocking pop wakes workers; on SQLite they poll.
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

    def listen(self) -> None:
        """LISTEN from now on (if not yet): a NOTIFY sent after this returns wakes the next
        wait(). Call it before looking for work, so that nothing committed between the look
        and the wait goes unnoticed."""
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()

    def wait(self, timeout: float) -> bool:
        """True when woken by a notification, False on timeout (or without a connection)."""
        try:
            self.listen()
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
    """NOTIFY `channel`'s listeners (PostgreSQL), outside any transaction's commit (in the
    writing transaction it would hold PostgreSQL's notify lock through that commit's fsync,
    serialising the writers). Never fails the caller, whose work committed: the listeners'
    poll finds it anyway."""
    if connection.vendor != "postgresql":
        return
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

    def dequeue(self) -> list[tuple[Any, str]] | None:
        if self._listener is None:
            return super().dequeue()
        with contextlib.suppress(Exception):  # no connection: wait() polls until it is back
            self._listener.listen()
        due = self.get_connection().filter(key=self.list_key, lock__lt=timezone.now())
        if due.exists():
            return super().dequeue()
        # A NOTIFY sent since listen() is queued on the LISTEN connection: not lost.
        self._listener.wait(Conf.POLL)
        return None
