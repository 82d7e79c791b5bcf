"""What the send service refuses, as domain errors: a machine code that API clients rely on
(the JSON API's `error`), a human reason (its `detail`, the console's message) and, for a
request field at fault, its name. The entry points translate them: the API to a 4xx JSON
problem, the console to a form error; the service knows neither."""

from __future__ import annotations


class MessagingError(Exception):
    """A send, read, cancel or resend that cannot be carried out."""

    code = "invalid_request"

    def __init__(self, reason: str, *, field: str = "") -> None:
        super().__init__(reason)
        self.reason, self.field = reason, field


class InvalidMessage(MessagingError):
    """The message itself is wrong: a field's value, or fields that do not go together."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}", field=field)

    code = "invalid_field"


class MessageNotFound(MessagingError):
    """No such message, or not one the principal may see (they are told the same)."""

    code = "not_found"


class NotCancellable(MessagingError):
    """The message is sent, being sent, or may have been sent (the reason says which)."""

    code = "not_cancellable"
