"""Typed errors raised by the Graph client and the token providers.

Every error carries `.transient` (retrying later may succeed) and `.retry_after` (seconds the
server asked us to wait, or None) so the job layer can decide between "reschedule" and "dead"
without parsing messages, and `.may_have_acted`: whether Graph may have performed the request
anyway (a 429 may have been acted on, so may a 5xx or a timeout; a refusal was not; nothing
was sent when we throttled ourselves or could not connect). Messages are written for
operators and never contain secrets or access tokens.
"""

from __future__ import annotations


class GraphError(Exception):
    """Base class: a Graph (or identity platform) call did not succeed."""

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        request_id: str = "",
        retry_after: float | None = None,
        method: str = "",
        route: str = "",
        may_have_acted: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after
        self.method = method
        self.route = route
        self.may_have_acted = self.transient if may_have_acted is None else may_have_acted

    @property
    def protected_api_refused(self) -> bool:
        """Graph's 403 for an app without the Teams protected-API approval (application-only
        chat and channel message reads: https://aka.ms/teams-protected-apis)."""
        return self.status == 403 and "protected api" in self.message.lower()

    def __str__(self) -> str:
        where = f"{self.method} {self.route}".strip()
        parts = [self.message]
        if self.status is not None or self.code:
            parts.append(f"[{self.status or '-'} {self.code}]".replace(" ]", "]"))
        if where:
            parts.append(f"({where})")
        if self.request_id:
            parts.append(f"request-id {self.request_id}")
        return " ".join(parts)


class Throttled(GraphError):
    """429 (or our own budget): wait `retry_after` seconds before trying again."""

    transient = True


class Transient(GraphError):
    """5xx, timeouts, connection resets: retry later with backoff."""

    transient = True


class Permanent(GraphError):
    """Retrying the same request will not help; a person or a code change must act."""


class AuthError(Permanent):
    """401: the token was rejected (after one re-acquire), or no token could be obtained."""


class GraphPermissionDenied(Permanent):
    """403: the app (or the delegated user) lacks a permission, or consent was revoked."""


class NotFound(Permanent):
    """404: the user, message, chat or subscription does not exist (any more)."""


class GraphValidationError(Permanent):
    """400: Graph rejected the request as malformed."""


class Conflict(Permanent):
    """409/412: a duplicate or a concurrent change."""


class DeltaTokenExpired(Permanent):
    """410 (SyncStateNotFound / resyncRequired): start a new delta round from scratch."""


class TokenError(AuthError):
    """No access token: the identity platform refused, or could not be reached.

    `aadsts` is the AADSTS number when the identity platform sent one. Transient when the
    platform was unreachable, throttled us or failed with 5xx.
    """

    def __init__(
        self,
        message: str,
        *,
        aadsts: int | None = None,
        transient: bool = False,
        error: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, code=error or (f"AADSTS{aadsts}" if aadsts else ""), retry_after=retry_after
        )
        self.aadsts = aadsts
        self.error = error
        self.transient = transient
