"""Fixtures for the emulator conformance tests (no Django needed)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from integrations.graph_emulator.pytest_plugin import emulator, graph_emulator  # noqa: F401
from integrations.graph_emulator.testing import RunningEmulator

MARIA = "maria.kowalski@fleetdemo.onmicrosoft.com"
HANNAH = "hannah.lindqvist@fleetdemo.onmicrosoft.com"
BOT = "fleet.bot@fleetdemo.onmicrosoft.com"


class Receiver:
    """A local webhook endpoint: validation handshakes + recorded notifications."""

    def __init__(self, ssl_context: Any = None) -> None:
        self.scheme = "https" if ssl_context is not None else "http"
        self.validation_mode = "echo"  # echo | wrong | status500 | html | sleep
        self.sleep_s = 0.0
        self.notify_sleep_s = 0.0
        self.statuses: list[int] = []  # consumed one per notification POST, then 202
        self.validations: list[dict[str, Any]] = []
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                qs = parse_qs(urlsplit(self.path).query)
                if "validationToken" in qs:
                    receiver._validate(self, qs["validationToken"][0])
                    return
                if receiver.notify_sleep_s:
                    time.sleep(receiver.notify_sleep_s)
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 202
                    receiver.posts.append(
                        {
                            "path": self.path,
                            "time": time.monotonic(),
                            "status": status,
                            "body": json.loads(body),
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _validate(self, h: BaseHTTPRequestHandler, token: str) -> None:
        with self.lock:
            self.validations.append(
                {"path": h.path, "token": token, "content_type": h.headers.get("Content-Type")}
            )
        mode = self.validation_mode
        if mode == "sleep":
            time.sleep(self.sleep_s)
        status, ctype, body = 200, "text/plain; charset=utf-8", token
        if mode == "wrong":
            body = "not-the-token"
        elif mode == "status500":
            status = 500
        elif mode == "html":
            ctype = "text/html"
        data = body.encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            pass

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_port}/notify"

    @property
    def lifecycle_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_port}/lifecycle"

    def items(self, path: str = "/notify", ok_only: bool = True) -> list[dict[str, Any]]:
        with self.lock:
            return [
                i
                for p in self.posts
                if p["path"].startswith(path) and (not ok_only or 200 <= p["status"] < 300)
                for i in p["body"]["value"]
            ]

    def wait_for(self, pred: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = pred()
            if result:
                return result
            time.sleep(0.05)
        raise AssertionError("condition not met in time")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(emulator: RunningEmulator) -> Iterator[Receiver]:
    emulator.control.allow_local_receivers()  # a loopback http receiver
    r = Receiver()
    yield r
    r.close()


class Graph:
    """Minimal Graph client for tests: requests with trust_env=False + the emulator CA."""

    def __init__(self, emu: RunningEmulator, token: str | None = None) -> None:
        self.emu = emu
        self.s = emu.session()
        self.token = token or emu.token()
        self.s.headers["Authorization"] = f"Bearer {self.token}"

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.emu.graph_url}/{path.lstrip('/')}"

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.s.get(self.url(path), timeout=30, **kw)

    def post(self, path: str, json_body: Any = None, **kw: Any) -> requests.Response:
        return self.s.post(self.url(path), json=json_body, timeout=30, **kw)

    def patch(self, path: str, json_body: Any = None, **kw: Any) -> requests.Response:
        return self.s.patch(self.url(path), json=json_body, timeout=30, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.s.delete(self.url(path), timeout=30, **kw)

    def user_id(self, upn: str) -> str:
        return self.get(f"users/{upn}").json()["id"]


@pytest.fixture
def graph(emulator: RunningEmulator) -> Graph:
    return Graph(emulator)


def delegated_token(
    emu: RunningEmulator,
    upn: str = BOT,
    scopes: str = "ChatMessage.Send ChannelMessage.Send Mail.Send offline_access openid profile",
) -> str:
    """Auth-code flow by hand (no MSAL): authorize -> code -> token."""
    s = emu.session()
    redirect = "http://localhost:8000/auth/callback"
    emu.control.set_redirect_uris(emu.client_id, [redirect])
    r = s.get(
        f"{emu.authority}/oauth2/v2.0/authorize",
        params={
            "client_id": emu.client_id,
            "redirect_uri": redirect,
            "response_type": "code",
            "scope": scopes,
            "state": "xyz",
            "login_hint": upn,
        },
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 302, r.text
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    t = s.post(
        f"{emu.authority}/oauth2/v2.0/token",
        data={
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "scope": scopes,
        },
        timeout=10,
    )
    assert t.status_code == 200, t.text
    return t.json()["access_token"]
