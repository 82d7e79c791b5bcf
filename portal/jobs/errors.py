"""How a handler tells the job layer what kind of failure it hit.

Any exception may carry `transient: bool` and `retry_after: float | None` (the Graph client's
errors do). Exceptions without them are treated as transient: a bug gets its retries and then
lands in the dead-letter queue, where an operator can see it and retry it after a fix.
"""

from __future__ import annotations


class JobError(Exception):
    transient = True
    retry_after: float | None = None


class TransientJobError(JobError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobDeferred(Exception):
    """Not now, and not a failure: the job goes back to waiting for `seconds` without using
    up an attempt or writing an attempt row (a delivery whose endpoint is at its concurrency
    cap)."""

    def __init__(self, reason: str, *, seconds: float) -> None:
        super().__init__(reason)
        self.seconds = seconds


class PermanentJobError(JobError):
    """Retrying cannot help (bad input, missing permission): dead-letter at once."""

    transient = False
