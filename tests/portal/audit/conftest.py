"""Helpers for the audit tests: verify_audit_chain as production runs it, SQL at the tables
behind the app's back, and real receivers for the audit stream on 127.0.0.1 (a syslog TCP
listener, TLS optional, and an HTTP(S) receiver), each of which can stop and start again on
the same port."""

from __future__ import annotations

import json
import re
import socketserver
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from typing import Any

import pytest
import trustme
from django.core.management import call_command
from django.db import connection, transaction

from tests.conftest import free_port


@pytest.fixture
def verify(django_capture_on_commit_callbacks):
    """verify_audit_chain as run in production: its checkpoint reaches the file on commit."""

    def run(*args: str) -> str:
        out = StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("verify_audit_chain", *args, stdout=out)
        return out.getvalue()

    return run


def as_intruder(*statements: tuple[str, list]) -> None:
    """SQL straight at the tables. On PostgreSQL as the test database's superuser, past the
    triggers with session_replication_role (the bypass as found); SQLite has no triggers."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
        for sql, params in statements:
            cursor.execute(sql, params)
        if connection.vendor == "postgresql":  # SET LOCAL outlives the savepoint
            cursor.execute("SET LOCAL session_replication_role = origin")


RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<timestamp>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    rb"(?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)$",
    re.DOTALL,
)


class _Receiver:
    server: socketserver.TCPServer | None = None

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.tls = tls
        self.messages: list[dict[str, Any]] = []  # what arrived, in order
        self._lock = threading.Lock()

    def _new_server(self) -> socketserver.TCPServer:
        raise NotImplementedError

    def start(self) -> None:
        self.server = self._new_server()
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def add(self, message: dict[str, Any]) -> None:
        with self._lock:
            self.messages.append(message)


class SyslogListener(_Receiver):
    """RFC 5424 messages with octet-counted framing (RFC 6587), as a SIEM's TCP input."""

    def _new_server(self) -> socketserver.TCPServer:
        listener = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    length = b""
                    while (char := self.rfile.read(1)) not in (b" ", b""):
                        length += char
                    if not length:
                        return
                    frame = self.rfile.read(int(length))
                    match = RFC5424.match(frame)
                    assert match, frame
                    listener.add(
                        {
                            "pri": int(match["pri"]),
                            "msgid": match["msgid"].decode(),
                            "app": match["app"].decode(),
                            "record": json.loads(match["msg"].decode("utf-8").lstrip("\ufeff")),
                        }
                    )

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        return server

    @property
    def records(self) -> list[dict[str, Any]]:
        """What arrived, once `expected` messages did (TCP syslog has no acknowledgement, so
        the sender may be done before the listener has read everything)."""
        deadline = time.monotonic() + 10
        while len(self.messages) < self.expected and time.monotonic() < deadline:
            time.sleep(0.02)
        return [message["record"] for message in self.messages]

    expected = 0


class HttpReceiver(_Receiver):
    """Takes POSTs; answers `status` (200 unless a test changes it)."""

    status = 200

    def _new_server(self) -> socketserver.TCPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.status == 200:
                    receiver.add({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"text":"Success","code":0}')

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        return server


@pytest.fixture(scope="session")
def local_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(local_ca, tmp_path, settings) -> ssl.SSLContext:
    """A server certificate for 127.0.0.1 from a local CA that the stream trusts."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    local_ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    local_ca.cert_pem.write_to_path(str(ca_file))
    settings.AUDIT_STREAM_CA_FILE = str(ca_file)
    return context


@pytest.fixture
def receivers():
    started: list[_Receiver] = []

    def start(receiver: _Receiver) -> _Receiver:
        receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()
