"""Request budgets: per (app, mailbox) rate + concurrency, Teams per-chat POST rate,
and the /subscriptions budgets.  All limits come from the ``throttling`` config
section so tests can scale them down at runtime.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

from .config import Config


@dataclass
class Rejection:
    code: str
    message: str
    retry_after: int


class Throttler:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, ...], deque[float]] = {}
        self._inflight: dict[tuple[str, str], int] = {}

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            # in-flight counters belong to running requests; keep them.

    def _cfg(self) -> dict:
        return self.config.section("throttling")

    def _hit(self, key: tuple[str, ...], limit: int, window: float) -> int | None:
        """Count one request; return seconds to wait if the budget is exhausted."""
        now = time.monotonic()
        dq = self._windows.setdefault(key, deque())
        while dq and dq[0] <= now - window:
            dq.popleft()
        if len(dq) >= limit:
            return max(1, math.ceil(dq[0] + window - now))
        dq.append(now)
        return None

    # ------------------------------------------------------------------ mailbox

    def acquire_mailbox(self, app_id: str, mailbox: str) -> Rejection | None:
        cfg = self._cfg()
        if not cfg["enabled"]:
            with self._lock:
                self._inflight[(app_id, mailbox)] = self._inflight.get((app_id, mailbox), 0) + 1
            return None
        with self._lock:
            n = self._inflight.get((app_id, mailbox), 0)
            if n >= cfg["mailbox_concurrency"]:
                return Rejection(
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    int(cfg["concurrency_retry_after_s"]),
                )
            wait = self._hit(
                ("mbx", app_id, mailbox),
                int(cfg["mailbox_requests"]),
                float(cfg["mailbox_window_s"]),
            )
            if wait is not None:
                return Rejection(
                    "ApplicationThrottled",
                    "Application is over its MailboxRequestRate limit. "
                    f"Limit: {cfg['mailbox_requests']} requests per "
                    f"{int(cfg['mailbox_window_s'])} seconds.",
                    wait,
                )
            self._inflight[(app_id, mailbox)] = n + 1
        return None

    def release_mailbox(self, app_id: str, mailbox: str) -> None:
        with self._lock:
            n = self._inflight.get((app_id, mailbox), 0) - 1
            if n <= 0:
                self._inflight.pop((app_id, mailbox), None)
            else:
                self._inflight[(app_id, mailbox)] = n

    # ------------------------------------------------------------------ teams / subscriptions

    def teams_post(self, app_id: str, resource: str) -> Rejection | None:
        cfg = self._cfg()
        if not cfg["enabled"]:
            return None
        rate = float(cfg["teams_post_per_s"])
        if rate <= 0:
            return None
        # 1 rps = one request per 1/rate-second window per chat or channel
        with self._lock:
            wait = self._hit(("teams", app_id, resource), 1, 1.0 / rate)
        if wait is None:
            return None
        return Rejection(
            "TooManyRequests",
            "Too many requests. Rate limit for posting messages to this chat/channel exceeded.",
            wait,
        )

    def subscription(self, app_id: str, op: str) -> Rejection | None:
        cfg = self._cfg()
        if not cfg["enabled"]:
            return None
        limit = int(cfg[f"subscription_{op}_limit"])
        with self._lock:
            wait = self._hit(("subs", op, app_id), limit, float(cfg["subscription_window_s"]))
        if wait is None:
            return None
        return Rejection(
            "TooManyRequests",
            f"Too many requests. The subscription {op} budget of {limit} requests "
            f"per {int(cfg['subscription_window_s'])} seconds is exhausted.",
            wait,
        )
