"""Fault injection rules (matched per request, by method and path pattern)."""

from __future__ import annotations

import fnmatch
import random
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

KINDS = ("status", "latency", "reset")


@dataclass
class FaultRule:
    id: str
    method: str  # "*" or an HTTP method
    pattern: re.Pattern[str]
    pattern_text: str
    kind: str  # status | latency | reset
    status: int = 503
    retry_after: int | None = None
    latency_ms: int = 0
    count: int | None = None  # remaining matches; None = unlimited
    probability: float = 1.0
    body: dict[str, Any] | None = None
    # Perform the request first, then answer with the fault (or time out, or reset): Graph
    # may act on a request and still answer 429, and a timeout says nothing of what happened.
    perform: bool = False
    hits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.pattern_text,
            "kind": self.kind,
            "status": self.status,
            "retry_after": self.retry_after,
            "latency_ms": self.latency_ms,
            "count": self.count,
            "probability": self.probability,
            "perform": self.perform,
            "hits": self.hits,
        }


def parse_rule(spec: dict[str, Any]) -> FaultRule:
    """Build a rule from the control-API JSON.

    ``{"method": "GET", "path": "regex"}`` or ``{"glob": "/v1.0/users/*"}``;
    ``kind``: ``status`` (with ``status``, optional ``retry_after``), ``429`` / ``503`` /
    ``504`` shorthands, ``latency`` (``latency_ms``), ``reset``; ``count``, ``probability``;
    ``perform`` (Graph requests only): carry the request out, then answer with the fault.
    """
    kind = str(spec.get("kind", "status"))
    status = int(spec.get("status", 503))
    if kind.isdigit():
        status = int(kind)
        kind = "status"
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; use one of {KINDS} or a status code")
    if "glob" in spec:
        text = str(spec["glob"])
        pattern = re.compile(fnmatch.translate(text), re.IGNORECASE)
    else:
        text = str(spec.get("path", ".*"))
        pattern = re.compile(text, re.IGNORECASE)
    retry_after = spec.get("retry_after")
    if kind == "status" and status == 429 and retry_after is None:
        retry_after = 1
    count = spec.get("count")
    prob = float(spec.get("probability", 1.0))
    if not 0.0 <= prob <= 1.0:
        raise ValueError("probability must be within [0, 1]")
    return FaultRule(
        id=str(uuid.uuid4()),
        method=str(spec.get("method", "*")).upper(),
        pattern=pattern,
        pattern_text=text,
        kind=kind,
        status=status,
        retry_after=int(retry_after) if retry_after is not None else None,
        latency_ms=int(spec.get("latency_ms", 0)),
        count=int(count) if count is not None else None,
        probability=prob,
        body=spec.get("body"),
        perform=bool(spec.get("perform", False)),
    )


class FaultRegistry:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._rng = rng or random.Random()

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def remove(self, rule_id: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.public() for r in self._rules]

    def match(self, method: str, path: str) -> FaultRule | None:
        """First matching rule (consumes one from its ``count``)."""
        with self._lock:
            for rule in self._rules:
                if rule.method not in ("*", method.upper()):
                    continue
                if not rule.pattern.search(path):
                    continue
                if rule.count is not None and rule.count <= 0:
                    continue
                if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                rule.hits += 1
                return rule
            self._rules = [r for r in self._rules if r.count is None or r.count > 0]
        return None
