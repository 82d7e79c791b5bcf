"""A local event receiver for tests: verifies every request with the standardwebhooks
library (as a Fleet service would) and answers with a status the test chooses."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Receiver:
    url: str
    secret: str = ""
    status: int = 200
    redirect_to: str = ""
    reply: bytes = b"ok"
    peers: list[int] = field(default_factory=list)  # the client port of each request
    received: list[dict[str, Any]] = field(default_factory=list)  # verified deliveries
    rejected: list[str] = field(default_factory=list)  # why verification failed
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self) -> list[dict[str, Any]]:
        """Every event received, once per webhook-id (as a receiver dedupes)."""
        seen, out = set(), []
        for delivery in self.received:
            if delivery["webhook-id"] in seen:
                continue
            seen.add(delivery["webhook-id"])
            out.extend(delivery["body"]["data"]["events"])
        return out


@contextmanager
def running_receiver(*, keep_alive: bool = False) -> Iterator[Receiver]:
    """With `keep_alive`, the receiver speaks HTTP/1.1 and keeps connections open."""
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items()}
            with receiver.lock:
                receiver.peers.append(self.client_address[1])
                status, secret, redirect = receiver.status, receiver.secret, receiver.redirect_to
                if status < 300 and not redirect:
                    try:
                        Webhook(secret).verify(body, headers)
                    except WebhookVerificationError as exc:
                        receiver.rejected.append(str(exc))
                        status = 401
                    else:
                        receiver.received.append(
                            {
                                "webhook-id": headers.get("webhook-id"),
                                "signature": headers.get("webhook-signature"),
                                "traceparent": headers.get("traceparent"),
                                "body": json.loads(body),
                            }
                        )
            self.send_response(302 if redirect else status)
            if redirect:
                self.send_header("Location", redirect)
            self.send_header("Content-Length", str(len(receiver.reply)))
            self.end_headers()
            self.wfile.write(receiver.reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/fleet/events"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
