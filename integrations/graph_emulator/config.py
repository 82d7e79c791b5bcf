"""Runtime configuration (all knobs tests scale down) and the emulator clock."""

from __future__ import annotations

import copy
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_CONFIG: dict[str, dict[str, Any]] = {
    "throttling": {
        "enabled": True,
        # Outlook, per (app, mailbox)
        "mailbox_requests": 10_000,
        "mailbox_window_s": 600.0,
        "mailbox_concurrency": 4,
        "concurrency_retry_after_s": 1,
        # Teams: POST message per chat / channel
        "teams_post_per_s": 1.0,
        # /subscriptions, per app, 20-second windows
        "subscription_window_s": 20.0,
        "subscription_list_limit": 25,
        "subscription_ops_limit": 500,
        "subscription_get_limit": 500,
        "subscription_reauthorize_limit": 1000,
    },
    "delivery": {
        "enabled": True,
        "retry_window_s": 4 * 3600.0,
        "initial_backoff_s": 30.0,
        "max_backoff_s": 1800.0,
        "batch_max": 10,
        "batch_delay_s": 0.2,
        "timeout_s": 10.0,
        "duplicate_probability": 0.0,
        "reorder_probability": 0.0,
        # slow / drop endpoint state machine (Microsoft Learn: "Receive change notifications
        # through webhooks", throttling of slow endpoints)
        "slow_threshold_s": 10.0,
        "slow_ratio": 0.10,
        "drop_ratio": 0.15,
        "slow_window_s": 600.0,
        "slow_min_samples": 20,
        "slow_delay_s": 10.0,
        "drop_duration_s": 600.0,
        # reauthorizationRequired before subscription expiry (emulator clock)
        "reauth_before_s": 3600.0,
        "reauth_interval_s": 900.0,
        "tick_s": 0.05,
    },
    "subscriptions": {
        "handshake_timeout_s": 10.0,
        # Graph's rule by default: https only, and never a loopback or private address (Graph
        # cannot reach one). The demo and the tests that run a local receiver opt in (http
        # then only for loopback hosts).
        "allow_http_notification_urls": False,
        "allow_local_notification_urls": False,
        "allow_remote_notification_urls": False,  # never call non-loopback hosts by default
        "verify_tls": True,
        "ca_bundle": None,
        "mail_max_minutes": 10_070,
        "mail_rich_max_minutes": 1_440,
        "teams_max_minutes": 4_320,
        "directory_max_minutes": 41_760,
        "min_minutes": 45,
        "teams_lifecycle_required_after_minutes": 60,
        "mailbox_quota": 1_000,
        "teams_org_quota": 10_000,
        "user_chats_quota": 10,
        "client_state_max": 128,
    },
    "delta": {
        "default_page_size": 10,
        "max_page_size": 1000,
        "replay_probability": 0.0,
        "max_cursors": 20_000,
        "tombstone_cap": 2_000,
    },
    "mail": {
        # Sending a draft is asynchronous in Exchange Online: POST .../send answers 202 and
        # the copy appears in Sent Items (and recipients' inboxes) later. Until then the draft
        # stays listed in Drafts; a second send of it in that window sends it twice.
        "send_delay_s": 2.0,
    },
    "demo": {
        "interval_s": 20.0,
    },
    "logs": {
        "request_log_size": 50_000,
        "sent_log_size": 50_000,
        "delivery_log_size": 20_000,
    },
}


class ConfigError(ValueError):
    pass


class Config:
    """Thread-safe nested configuration with validated partial updates."""

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._data = copy.deepcopy(DEFAULT_CONFIG)
        if overrides:
            self.update(overrides)
        self._initial = copy.deepcopy(self._data)

    def get(self, section: str, key: str) -> Any:
        with self._lock:
            return self._data[section][key]

    def section(self, section: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._data[section])

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._data)

    def update(self, partial: dict[str, Any]) -> None:
        with self._lock:
            for section, values in partial.items():
                if section not in self._data:
                    raise ConfigError(f"unknown config section {section!r}")
                if not isinstance(values, dict):
                    raise ConfigError(f"config section {section!r} must be an object")
                for key, value in values.items():
                    if key not in self._data[section]:
                        raise ConfigError(f"unknown config key {section}.{key}")
                    old = self._data[section][key]
                    if isinstance(old, bool) and not isinstance(value, bool):
                        raise ConfigError(f"{section}.{key} must be a boolean")
                    numeric = isinstance(old, (int, float)) and not isinstance(old, bool)
                    if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
                        raise ConfigError(f"{section}.{key} must be a number")
                    self._data[section][key] = value

    def reset(self) -> None:
        with self._lock:
            self._data = copy.deepcopy(self._initial)


class Clock:
    """Wall clock with an adjustable offset (time travel for expiry tests)."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            off = self._offset
        return datetime.now(UTC) + timedelta(seconds=off)

    def timestamp(self) -> float:
        with self._lock:
            return time.time() + self._offset

    @property
    def offset(self) -> float:
        with self._lock:
            return self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def set_offset(self, seconds: float) -> None:
        with self._lock:
            self._offset = seconds
