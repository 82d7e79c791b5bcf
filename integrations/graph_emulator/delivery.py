"""Change-notification and lifecycle-notification delivery (background thread).

* notifications are batched per notification URL (``batch_max`` per POST);
* any 2xx is success; other statuses / timeouts / connection errors are retried
  with exponential backoff until ``retry_window_s`` has passed, then dropped
  (and a ``missed`` lifecycle event is queued for Outlook subscriptions);
* optional duplicates / reordering; slow / drop endpoint state machine ("Receive change
  notifications through webhooks");
* subscription expiry and ``reauthorizationRequired`` scheduling use the
  emulator clock, retry timing uses the real monotonic clock.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import requests

from . import outbound
from .config import Config
from .httptypes import iso
from .state import EmulatorState, Subscription

log = logging.getLogger("graph_emulator.delivery")


@dataclass
class Pending:
    url: str
    item: dict[str, Any]
    subscription_id: str
    lifecycle: bool
    created: float
    next_at: float
    attempts: int = 0
    family: str = "outlook"


class UrlQueue:
    """The notifications waiting for one URL: those not due yet by due time, the due ones by
    the order a batch takes them in (lifecycle notifications first, then creation order), so
    that taking a batch costs the batch, not the backlog (a slow receiver's can reach tens of
    thousands)."""

    def __init__(self) -> None:
        self.waiting: list[tuple[float, int, Pending]] = []
        self.due: list[tuple[bool, float, int, Pending]] = []

    def __len__(self) -> int:
        return len(self.waiting) + len(self.due)

    def add(self, p: Pending, order: int) -> None:
        heapq.heappush(self.waiting, (p.next_at, order, p))

    def take(self, now: float, limit: int) -> list[Pending]:
        waiting, due = self.waiting, self.due
        while waiting and waiting[0][0] <= now:
            _, order, p = heapq.heappop(waiting)
            heapq.heappush(due, (not p.lifecycle, p.created, order, p))
        return [heapq.heappop(due)[3] for _ in range(min(limit, len(due)))]


@dataclass
class EndpointStats:
    samples: deque[tuple[float, bool]] = field(default_factory=deque)
    mode: str = "normal"  # normal | slow | drop
    drop_until: float = 0.0


class DeliveryManager:
    def __init__(
        self, state: EmulatorState, config: Config, rng: random.Random | None = None
    ) -> None:
        self.state = state
        self.config = config
        self.rng = rng or random.Random()
        self._cv = threading.Condition()
        self._queues: dict[str, UrlQueue] = {}
        self._pending_total = 0
        self._order = itertools.count()  # ties in a queue go in the order queued
        self._inflight_urls: set[str] = set()
        self._endpoints: dict[str, EndpointStats] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="graph-emu-deliver")
        self.log: deque[dict[str, Any]] = deque(maxlen=int(config.get("logs", "delivery_log_size")))
        self._log_seq = 0
        self._last_schedule = 0.0
        # Emulator-clock time before which no subscription expires or is owed a
        # reauthorizationRequired, valid while the subscription table's version and the
        # reauthorization settings are _lifecycle_key: until then the scan over every
        # subscription (a fleet tenant has tens of thousands) is skipped.
        self._lifecycle_next: datetime | None = None
        self._lifecycle_key: tuple[Any, ...] = ()
        state.notifier = self.enqueue

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="graph-emu-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def reset(self) -> None:
        with self._cv:
            self._queues.clear()
            self._pending_total = 0
            self._lifecycle_key = ()
            self._endpoints.clear()
            self.log.clear()

    # ------------------------------------------------------------------ enqueue

    def enqueue(self, items: list[tuple[Subscription, dict[str, Any]]]) -> None:
        """Queue change notifications (called with the state lock held)."""
        cfg = self.config.section("delivery")
        if not cfg["enabled"]:
            return
        now = time.monotonic()
        wake = now + float(cfg["tick_s"])
        with self._cv:
            soonest = float("inf")
            for sub, item in items:
                due = now + float(cfg["batch_delay_s"])
                ep = self._endpoints.get(sub.notification_url)
                if ep is not None and ep.mode == "drop" and now < ep.drop_until:
                    self._record(
                        {
                            "event": "dropped",
                            "url": sub.notification_url,
                            "reason": "endpoint in drop state",
                            "items": [item],
                        }
                    )
                    continue
                if ep is not None and ep.mode == "slow":
                    due += float(cfg["slow_delay_s"])
                if cfg["reorder_probability"] and self.rng.random() < cfg["reorder_probability"]:
                    due += float(cfg["batch_delay_s"]) * 3 + 0.3
                self._queue(
                    Pending(
                        sub.notification_url, item, sub.id, False, now, due, family=sub.spec.family
                    )
                )
                soonest = min(soonest, due)
            # The worker looks at the queues every tick anyway: wake it only for what is due
            # sooner (one wake per notification would cost more than the notification).
            if soonest < wake:
                self._cv.notify_all()

    def enqueue_lifecycle(self, sub: Subscription, event: str) -> bool:
        """Queue a lifecycle event for ``sub`` (caller holds the state lock)."""
        url = sub.lifecycle_url
        if not url:
            return False
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": iso(sub.expiration),
            "tenantId": self.state.tenant_id,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }
        now = time.monotonic()
        with self._cv:
            self._queue(Pending(url, item, sub.id, True, now, now, family=sub.spec.family))
            self._cv.notify_all()
        return True

    def _queue(self, p: Pending) -> None:
        """Caller holds ``_cv``."""
        queue = self._queues.get(p.url)
        if queue is None:
            queue = self._queues[p.url] = UrlQueue()
        queue.add(p, next(self._order))
        self._pending_total += 1

    def pending_count(self) -> int:
        with self._cv:
            return self._pending_total

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._schedule_lifecycle()
                self._dispatch_due()
            except Exception:  # keep the worker alive no matter what
                log.exception("delivery worker iteration failed")
            with self._cv:
                self._cv.wait(timeout=float(self.config.get("delivery", "tick_s")))

    def _schedule_lifecycle(self) -> None:
        mono = time.monotonic()
        if mono - self._last_schedule < 0.2:
            return
        self._last_schedule = mono
        cfg = self.config.section("delivery")
        now = self.state.clock.now()
        before = timedelta(seconds=float(cfg["reauth_before_s"]))
        interval = timedelta(seconds=float(cfg["reauth_interval_s"]))
        subs = self.state.subscriptions
        if (
            (subs.version, (before, interval)) == self._lifecycle_key
            and self._lifecycle_next is not None
            and now < self._lifecycle_next
        ):
            return  # nothing is due before then: no subscription nor the config changed since
        with self.state.lock:
            nearest: datetime | None = None
            for sub in list(subs.values()):
                if sub.expiration <= now:
                    del subs[sub.id]
                    log.info("subscription %s expired and was deleted", sub.id)
                    self._record({"event": "expired", "subscriptionId": sub.id})
                    continue
                if (
                    sub.lifecycle_url
                    and sub.expiration - now <= before
                    and (sub.last_reauth_notice is None or now - sub.last_reauth_notice >= interval)
                ):
                    sub.last_reauth_notice = now
                    self.enqueue_lifecycle(sub, "reauthorizationRequired")
                event = sub.expiration
                if sub.lifecycle_url:
                    window = sub.expiration - before
                    if window > now:
                        event = min(event, window)
                    elif sub.last_reauth_notice is not None:
                        event = min(event, sub.last_reauth_notice + interval)
                if nearest is None or event < nearest:
                    nearest = event
            self._lifecycle_next = nearest
            self._lifecycle_key = (subs.version, (before, interval))

    def _dispatch_due(self) -> None:
        cfg = self.config.section("delivery")
        now = time.monotonic()
        batches: list[tuple[str, list[Pending]]] = []
        with self._cv:
            if not self._pending_total:
                return
            for url, queue in list(self._queues.items()):
                if url in self._inflight_urls:
                    continue
                # lifecycle notifications first, then in creation order
                batch = queue.take(now, int(cfg["batch_max"]))
                if not queue:
                    del self._queues[url]
                if not batch:
                    continue
                self._pending_total -= len(batch)
                self._inflight_urls.add(url)
                batches.append((url, batch))
        for url, batch in batches:
            self._pool.submit(self._send, url, batch)

    def _live(self, batch: list[Pending]) -> list[Pending]:
        with self.state.lock:
            subs = self.state.subscriptions
            return [p for p in batch if p.lifecycle or p.subscription_id in subs]

    def _send(self, url: str, batch: list[Pending]) -> None:
        try:
            self._send_inner(url, batch)
        except Exception:
            log.exception("delivery to %s failed unexpectedly", url)
        finally:
            with self._cv:
                self._inflight_urls.discard(url)
                self._cv.notify_all()

    def _send_inner(self, url: str, batch: list[Pending]) -> None:
        cfg = self.config.section("delivery")
        batch = self._live(batch)
        if not batch:
            return
        if (
            cfg["reorder_probability"]
            and len(batch) > 1
            and (self.rng.random() < cfg["reorder_probability"])
        ):
            self.rng.shuffle(batch)
        body = json.dumps({"value": [p.item for p in batch]}).encode()
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            resp = outbound.post(
                url,
                self.config,
                data=body,
                content_type="application/json; charset=utf-8",
                timeout=float(cfg["timeout_s"]),
            )
            status = resp.status_code
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - started
        ok = status is not None and 200 <= status < 300
        self._record(
            {
                "event": "attempt",
                "url": url,
                "status": status,
                "error": error,
                "elapsed_ms": round(elapsed * 1000, 1),
                "ok": ok,
                "attempts": [p.attempts + 1 for p in batch],
                "items": [p.item for p in batch],
            }
        )
        self._track_endpoint(url, elapsed, cfg)
        if ok:
            dup = float(cfg["duplicate_probability"])
            if dup and self.rng.random() < dup:
                again = self.rng.choice(batch)
                with self._cv:
                    self._queue(
                        Pending(
                            url,
                            again.item,
                            again.subscription_id,
                            again.lifecycle,
                            time.monotonic(),
                            time.monotonic() + 0.1,
                            family=again.family,
                        )
                    )
            return
        now = time.monotonic()
        retry: list[Pending] = []
        expired: list[Pending] = []
        for p in batch:
            p.attempts += 1
            if now - p.created >= float(cfg["retry_window_s"]):
                expired.append(p)
                continue
            delay = min(
                float(cfg["initial_backoff_s"]) * (2 ** (p.attempts - 1)),
                float(cfg["max_backoff_s"]),
            )
            p.next_at = now + delay
            retry.append(p)
        with self._cv:
            for p in retry:
                self._queue(p)
        if expired:
            self._record({"event": "gave_up", "url": url, "items": [p.item for p in expired]})
            with self.state.lock:
                seen: set[str] = set()
                for p in expired:
                    sub = self.state.subscriptions.get(p.subscription_id)
                    if (
                        not p.lifecycle
                        and sub is not None
                        and sub.spec.family == "outlook"
                        and sub.id not in seen
                    ):
                        seen.add(sub.id)
                        self.enqueue_lifecycle(sub, "missed")

    def _track_endpoint(self, url: str, elapsed: float, cfg: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._cv:
            ep = self._endpoints.setdefault(url, EndpointStats())
            ep.samples.append((now, elapsed > float(cfg["slow_threshold_s"])))
            while ep.samples and ep.samples[0][0] < now - float(cfg["slow_window_s"]):
                ep.samples.popleft()
            total = len(ep.samples)
            if total < int(cfg["slow_min_samples"]):
                ep.mode = "normal" if ep.mode != "drop" or now >= ep.drop_until else ep.mode
                return
            ratio = sum(1 for _, slow in ep.samples if slow) / total
            previous = ep.mode
            if ratio > float(cfg["drop_ratio"]):
                if ep.mode != "drop":
                    ep.drop_until = now + float(cfg["drop_duration_s"])
                ep.mode = "drop"
            elif ratio > float(cfg["slow_ratio"]):
                ep.mode = "slow"
            else:
                ep.mode = "normal"
            if previous != ep.mode:
                log.warning(
                    "notification endpoint %s is now %s (slow ratio %.2f)", url, ep.mode, ratio
                )
                self._record(
                    {"event": "endpoint_state", "url": url, "mode": ep.mode, "slow_ratio": ratio}
                )

    def endpoint_states(self) -> dict[str, str]:
        with self._cv:
            return {u: e.mode for u, e in self._endpoints.items()}

    def _record(self, entry: dict[str, Any]) -> None:
        with self._cv:
            self._log_seq += 1
            self.log.append(
                {"seq": self._log_seq, "wall": time.time(), "monotonic": time.monotonic(), **entry}
            )

    def deliveries(self, since: int = 0) -> list[dict[str, Any]]:
        with self._cv:
            return [e for e in self.log if e["seq"] > since]
