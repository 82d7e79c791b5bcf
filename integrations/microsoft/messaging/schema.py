"""A message's one validation: the fields of an e-mail and of a Teams message, their rules,
and the JSON Schema the API documents, generated from the same declarations (so the schema
and what the service accepts cannot drift; tests/integrations/microsoft/test_message_schema.py
checks that they agree).

`from_json()` reads a POST /api/messages body (JSON names); `check_mail()` and `check_teams()`
check the keyword arguments of outbox.send_mail / send_teams_message, which every other caller
uses. Both raise InvalidMessage naming the first field at fault by its JSON name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from integrations.microsoft.messaging.errors import InvalidMessage

MAX_RECIPIENTS = 500  # Exchange Online's per-message recipient limit
MAIL_BODY_LIMIT = 4 * 1024 * 1024  # Graph: a message of up to 4 MB in one request
TEAMS_BODY_LIMIT = 28 * 1024  # Graph: a chatMessage of about 28 KB
SUBJECT_LIMIT = 400
CONTENT_TYPES = ("text", "html")
IMPORTANCES = ("normal", "high")
CHANNELS = ("mail", "teams")


def fit_subject(text: str) -> str:
    """`text` cut to SUBJECT_LIMIT bytes of UTF-8 on a character boundary, with "…" when cut,
    for callers that make a subject from data of their own (the limit is in bytes: a subject
    of non-ASCII characters is refused long before 400 characters)."""
    if len(text.encode()) <= SUBJECT_LIMIT:
        return text
    room = SUBJECT_LIMIT - len("…".encode())
    return text.encode()[:room].decode(errors="ignore") + "…"


Kind = Literal["string", "address", "addresses", "choice"]


@dataclass(frozen=True)
class Field:
    """One field: its JSON name, the keyword the outbox takes, and its rule."""

    name: str
    attr: str
    kind: Kind
    required: bool = False
    max_bytes: int = 0
    choices: tuple[str, ...] = ()

    def clean(self, value: Any) -> Any:
        """The field's value as stored, or InvalidMessage naming the field."""
        if self.kind == "choice":
            if value is None:
                return self.choices[0]
            if value not in self.choices:
                raise InvalidMessage(self.name, f"must be one of {', '.join(self.choices)}.")
            return value
        if self.kind == "addresses":
            if value is None:
                return []
            if not isinstance(value, list):
                raise InvalidMessage(self.name, "must be a list of e-mail addresses.")
            return [_address(f"{self.name}[{i}]", item) for i, item in enumerate(value)]
        if value is None or (value == "" and not self.required):
            if self.required:
                raise InvalidMessage(self.name, "is required.")
            return ""
        if not isinstance(value, str):
            raise InvalidMessage(self.name, "must be a string.")
        if self.required and not value.strip():
            raise InvalidMessage(self.name, "must not be empty.")
        if self.max_bytes and len(value.encode("utf-8")) > self.max_bytes:
            raise InvalidMessage(self.name, f"is over the limit of {self.max_bytes} bytes.")
        return _address(self.name, value) if self.kind == "address" else value

    def json_schema(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"enum": list(self.choices), "default": self.choices[0]}
        address: dict[str, Any] = {"type": "string", "format": "email"}
        if self.kind == "addresses":
            return {"type": "array", "items": address, "maxItems": MAX_RECIPIENTS}
        schema: dict[str, Any] = {"type": "string"}
        if self.kind == "address":
            # An optional address may be empty: "" is the same as not giving it.
            schema.update(address if self.required else {"anyOf": [address, {"const": ""}]})
        if self.required:
            schema["pattern"] = r"\S"  # not empty, not only blanks
        if self.max_bytes:
            # maxLength counts characters; the limit is in UTF-8 bytes, which are never fewer.
            schema["maxLength"] = self.max_bytes
            schema["description"] = f"at most {self.max_bytes} bytes of UTF-8"
        return schema


MAIL_FIELDS = (
    Field("from", "sender", "address", required=True),
    Field("to", "to", "addresses"),
    Field("cc", "cc", "addresses"),
    Field("bcc", "bcc", "addresses"),
    Field("subject", "subject", "string", max_bytes=SUBJECT_LIMIT),
    Field("body", "body", "string", required=True, max_bytes=MAIL_BODY_LIMIT),
    Field("contentType", "content_type", "choice", choices=CONTENT_TYPES),
    Field("importance", "importance", "choice", choices=IMPORTANCES),
)
TEAMS_FIELDS = (
    Field("chatId", "chat_id", "string", max_bytes=255),
    Field("toUser", "to_user", "address", max_bytes=255),
    Field("teamId", "team_id", "string", max_bytes=64),
    Field("channelId", "channel_id", "string", max_bytes=255),
    Field("body", "body", "string", required=True, max_bytes=TEAMS_BODY_LIMIT),
    Field("contentType", "content_type", "choice", choices=CONTENT_TYPES),
)
FIELDS = {"mail": MAIL_FIELDS, "teams": TEAMS_FIELDS}
# The rules across fields, in words for the schema (checked in check_mail / check_teams).
MAIL_RULE = f"At least one recipient in to, cc or bcc; at most {MAX_RECIPIENTS} in all."
TEAMS_RULE = "Exactly one target: chatId, toUser, or teamId with channelId."


def _address(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidMessage(field, "must be an e-mail address string.")
    try:
        validate_email(value.strip())
    except ValidationError:
        raise InvalidMessage(field, f"{value[:80]!r} is not an e-mail address.") from None
    return value.strip()


def _clean(fields: tuple[Field, ...], values: dict[str, Any]) -> dict[str, Any]:
    return {field.attr: field.clean(values.get(field.attr)) for field in fields}


def check_mail(values: dict[str, Any]) -> dict[str, Any]:
    """An e-mail's fields (outbox keywords), checked and cleaned."""
    cleaned = _clean(MAIL_FIELDS, values)
    recipients = len(cleaned["to"]) + len(cleaned["cc"]) + len(cleaned["bcc"])
    if not recipients:
        raise InvalidMessage("to", "give at least one recipient (to, cc or bcc).")
    if recipients > MAX_RECIPIENTS:
        raise InvalidMessage("to", f"more than {MAX_RECIPIENTS} recipients in to, cc and bcc.")
    return cleaned


def check_teams(values: dict[str, Any]) -> dict[str, Any]:
    """A Teams message's fields (outbox keywords), checked and cleaned."""
    cleaned = _clean(TEAMS_FIELDS, values)
    chat_id, to_user = cleaned["chat_id"], cleaned["to_user"]
    team_id, channel_id = cleaned["team_id"], cleaned["channel_id"]
    if bool(chat_id) + bool(to_user) + bool(team_id or channel_id) != 1:
        raise InvalidMessage(
            "chatId", "give exactly one target: chatId, toUser, or teamId with channelId."
        )
    if (team_id or channel_id) and not (team_id and channel_id):
        raise InvalidMessage(
            "channelId" if team_id else "teamId", "teamId and channelId go together."
        )
    return cleaned


@dataclass(frozen=True)
class MessageRequest:
    """A checked request to send: the channel and the outbox's keyword arguments."""

    channel: Literal["mail", "teams"]
    fields: dict[str, Any]


def from_json(body: dict[str, Any]) -> MessageRequest:
    """A POST /api/messages body, checked; InvalidMessage names the first field at fault."""
    channel = body.get("channel")
    if channel not in CHANNELS:
        raise InvalidMessage("channel", "must be 'mail' or 'teams'.")
    fields = FIELDS[channel]
    known = {"channel", *(field.name for field in fields)}
    for name in sorted(body):
        if name not in known:
            raise InvalidMessage(name, "is not a field of this channel's messages.")
    values = {field.attr: body.get(field.name) for field in fields}
    if channel == "mail":
        return MessageRequest("mail", check_mail(values))
    return MessageRequest("teams", check_teams(values))


def addresses(value: str | Iterable[str] | None) -> list[str]:
    """The outbox's recipients argument as a list (one address may be given as a string)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def json_schema() -> dict[str, Any]:
    """The request body's JSON Schema, as the API's OpenAPI document serves it."""

    def variant(channel: str, fields: tuple[Field, ...], rule: str) -> dict[str, Any]:
        return {
            "type": "object",
            "description": rule,
            "required": ["channel", *(field.name for field in fields if field.required)],
            "properties": {
                "channel": {"const": channel},
                **{field.name: field.json_schema() for field in fields},
            },
            "additionalProperties": False,
        }

    def given(*names: str) -> dict[str, Any]:
        """All of these fields present and not empty (an empty one counts as not given)."""
        return {"required": list(names), "properties": {n: {"minLength": 1} for n in names}}

    def only(names: tuple[str, ...], others: tuple[str, ...]) -> dict[str, Any]:
        return {**given(*names), "not": {"anyOf": [given(other) for other in others]}}

    mail = variant("mail", MAIL_FIELDS, MAIL_RULE)
    mail["anyOf"] = [
        {"required": [name], "properties": {name: {"minItems": 1}}} for name in ("to", "cc", "bcc")
    ]
    teams = variant("teams", TEAMS_FIELDS, TEAMS_RULE)
    teams["oneOf"] = [
        only(("chatId",), ("toUser", "teamId", "channelId")),
        only(("toUser",), ("chatId", "teamId", "channelId")),
        only(("teamId", "channelId"), ("chatId", "toUser")),
    ]
    return {"oneOf": [mail, teams]}
