"""The suite's network guard (tests/conftest.py): loopback only."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from tests import conftest


def test_a_connection_to_another_machine_is_refused_before_it_leaves():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock, pytest.raises(conftest.SocketBlocked, match=r"203\.0\.113\.7"):
        sock.connect(("203.0.113.7", 443))  # TEST-NET-3: never routed anyway
    conftest._ATTEMPTS.clear()  # the refusal was the point here


def test_a_swallowed_attempt_is_still_recorded_for_the_teardown_to_fail():
    with contextlib.suppress(Exception):  # what careless code under test might do
        socket.create_connection(("198.51.100.1", 80), timeout=1)
    assert conftest._ATTEMPTS == ["('198.51.100.1', 80)"]
    conftest._ATTEMPTS.clear()  # else _loopback_only fails this test, as it should


def test_loopback_works_over_ipv4_and_by_name():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        accepted = threading.Thread(target=lambda: server.accept()[0].close())
        accepted.start()
        socket.create_connection(("localhost", port), timeout=5).close()
        accepted.join(timeout=5)
    assert conftest._ATTEMPTS == []
