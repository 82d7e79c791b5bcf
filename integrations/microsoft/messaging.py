"""Outbound e-mail and Teams messages: sent by jobs, never twice (Microsoft Learn: "Send mail",
"Send chatMessage in a channel or a chat").

`send_mail()` and `send_teams_message()` create an OutboundMessage and its job in one
transaction (the job layer's outbox), keyed by an idempotency key: calling them again with
the same key returns the first message instead of sending another.

Mail (the job `graph.send_mail`): the message is created as a *draft* tagged with the key in
a single-value extended property, then the draft is sent (`POST …/messages/{id}/send`).
Before each step with a side effect the row's `step` is committed, so a run after a crash
knows what may have happened and asks Graph first:

- a message with the tag that is no longer a draft → it was sent: done, nothing is sent;
- a tagged draft → send that draft (after MESSAGING_SEND_SETTLE_SECONDS when a send of it
  had already been requested: Exchange keeps a just-sent draft visible for a moment);
- nothing → create the draft (again).

Teams (the job `graph.send_teams`): posted with the delegated sender's token (app-only
tokens may only import messages: "Send chatMessage in a channel or a chat"). Graph has no
idempotency key for chat posts, so the
row's step is committed before the POST; a run that finds the step set lists the chat's (or
channel's) recent messages and takes a message from the sender account with the same
content, created since the post was requested and not claimed by another OutboundMessage
(a unique constraint), as the one it posted. Remaining window, honestly: if Graph lists a
new message later than MESSAGING_TEAMS_SETTLE_SECONDS after it was posted, or somebody posts
the identical text as the sender account into that chat within that time, a retry can post
twice or not at all. Two ways lead into that path: a crash after the POST and before its
result is recorded, and an answer after which Graph may have posted anyway (a 429, a 5xx, a
timeout: graph.request never repeats these posts, and neither does a mail's draft or send).

Budgets (shared by every worker through the SendBudget table): at most
MESSAGING_MAIL_PER_MINUTE sends per sending mailbox (Exchange Online: 30/min), at most
MESSAGING_TEAMS_PER_SECOND posts per chat or channel and MESSAGING_TEAMS_SENDER_PER_SECOND
per sender account (Graph: 1 per second per chat/channel and 1 per user). A send waits for
its slot in the worker up to MESSAGING_MAX_BUDGET_WAIT_SECONDS; a later slot is reserved for
it and the job comes back then. A 429 or 503 with Retry-After blocks the mailbox/chat for
every worker until it has passed. Slots and windows are throttle.py's (the mailbox keyed by
its Graph id, shared with graph.request's gate). The clock is each worker's; hosts must keep
time (NTP).
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.microsoft import auth, graph, teams_sender, throttle
from integrations.microsoft.errors import GraphError, TokenError
from integrations.microsoft.models import OutboundMessage
from portal.access.authz import require
from portal.audit.services import record
from portal.events.services import emit
from portal.jobs.errors import PermanentJobError, TransientJobError
from portal.jobs.models import Job
from portal.jobs.runner import enqueue

logger = logging.getLogger(__name__)

MAIL_JOB = "graph.send_mail"
TEAMS_JOB = "graph.send_teams"

# A named MAPI property in our own namespace (GUID made for this portal) carries the key.
TAG_PROPERTY_ID = "String {6f1c2a8e-4b7d-4e55-9a3c-2d8e5b1f7c40} Name FleetPortalSendKey"
NO_SENDER_MESSAGE = (
    "No Teams sender account is connected: an admin connects one on the Credentials page."
)
APP_ONLY_HINT = (
    "Graph accepts Teams posts from application tokens only for importing "
    "messages; the portal posts as the connected Teams sender account."
)
_KEY_OK = re.compile(r"^[A-Za-z0-9._:@-]{1,150}$")
_TAGS = re.compile(r"<[^>]+>")
MATCH_SKEW = timedelta(minutes=5)  # clock difference tolerated between us and Graph


# --------------------------------------------------------------------------- settings


def _setting(name: str) -> float:
    """Read at call time, so tests and a changed environment apply without a restart."""
    return float(getattr(settings, name))


def mail_per_minute() -> float:
    return _setting("MESSAGING_MAIL_PER_MINUTE")


def teams_per_second() -> float:
    return _setting("MESSAGING_TEAMS_PER_SECOND")


def teams_sender_per_second() -> float:
    return _setting("MESSAGING_TEAMS_SENDER_PER_SECOND")


def max_budget_wait() -> float:
    return _setting("MESSAGING_MAX_BUDGET_WAIT_SECONDS")


def send_settle_seconds() -> float:
    return _setting("MESSAGING_SEND_SETTLE_SECONDS")


def teams_settle_seconds() -> float:
    return _setting("MESSAGING_TEAMS_SETTLE_SECONDS")


def teams_token_kind() -> str:
    # "app" exists only to show (and test) Graph's refusal; never configure it in production.
    return str(settings.MESSAGING_TEAMS_TOKEN_KIND)


# --------------------------------------------------------------------------- services


def _key(idempotency_key: str | None) -> str:
    """The stored key: the caller's (namespaced) or a new one; always safe in an OData
    string literal and an extended property value."""
    if not idempotency_key:
        return f"msg:{uuid.uuid4().hex}"
    if _KEY_OK.match(idempotency_key):
        return f"msg:{idempotency_key}"
    return "msg:sha256:" + hashlib.sha256(idempotency_key.encode()).hexdigest()


def _addresses(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out = [str(a).strip() for a in items if str(a).strip()]
    for address in out:
        if "@" not in address or len(address) > 320:
            raise ValueError(f"Not an e-mail address: {address!r}")
    return out


def _create(
    channel: str,
    job_type: str,
    fields: dict[str, Any],
    *,
    idempotency_key: str | None,
    created_by: str,
    correlation_id: str,
) -> OutboundMessage:
    key = _key(idempotency_key)
    with transaction.atomic():
        existing = OutboundMessage.objects.filter(idempotency_key=key).first()
        if existing is not None:
            return existing
        try:
            with transaction.atomic():
                message = OutboundMessage.objects.create(
                    channel=channel,
                    idempotency_key=key,
                    created_by=created_by[:150],
                    correlation_id=correlation_id[:64],
                    **fields,
                )
        except IntegrityError:
            return OutboundMessage.objects.get(idempotency_key=key)
        job = enqueue(
            job_type,
            {"message": message.pk},
            idempotency_key=key,
            created_by=created_by,
            correlation_id=correlation_id,
        )
        OutboundMessage.objects.filter(pk=message.pk).update(job=job)
        message.job = job
    return message


def send_mail(
    sender: str,
    to: str | Iterable[str],
    subject: str,
    body: str,
    *,
    cc: str | Iterable[str] | None = None,
    bcc: str | Iterable[str] | None = None,
    content_type: str = "text",
    importance: str = "normal",
    idempotency_key: str | None = None,
    created_by: str = "",
    correlation_id: str = "",
    resend_of: OutboundMessage | None = None,
) -> OutboundMessage:
    """Queue an e-mail from mailbox `sender` (UPN or user id; use one form per mailbox: it is
    also the budget key). Works inside the caller's transaction."""
    to_list, cc_list, bcc_list = _addresses(to), _addresses(cc), _addresses(bcc)
    if not (to_list or cc_list or bcc_list):
        raise ValueError("An e-mail needs at least one recipient.")
    if not sender.strip():
        raise ValueError("An e-mail needs a sending mailbox.")
    if content_type not in ("text", "html"):
        raise ValueError("content_type is 'text' or 'html'.")
    if importance not in ("normal", "high"):
        raise ValueError("importance is 'normal' or 'high'.")
    return _create(
        OutboundMessage.Channel.MAIL,
        MAIL_JOB,
        {
            "sender": sender.strip(),
            "to_recipients": to_list,
            "cc_recipients": cc_list,
            "bcc_recipients": bcc_list,
            "subject": subject[:400],
            "body": body,
            "content_type": content_type,
            "importance": importance,
            "resend_of": resend_of,
        },
        idempotency_key=idempotency_key,
        created_by=created_by,
        correlation_id=correlation_id,
    )


def send_teams_message(
    body: str,
    *,
    chat_id: str = "",
    team_id: str = "",
    channel_id: str = "",
    to_user: str = "",
    content_type: str = "text",
    idempotency_key: str | None = None,
    created_by: str = "",
    correlation_id: str = "",
    resend_of: OutboundMessage | None = None,
) -> OutboundMessage:
    """Queue a Teams message to a chat (`chat_id`), a user's 1:1 chat with the sender account
    (`to_user`, found or created when it is sent) or a channel (`team_id` + `channel_id`)."""
    if not body.strip():
        raise ValueError("A Teams message needs a body.")
    if content_type not in ("text", "html"):
        raise ValueError("content_type is 'text' or 'html'.")
    if bool(chat_id) + bool(to_user) + bool(team_id or channel_id) != 1:
        raise ValueError("Give either chat_id, to_user, or team_id and channel_id.")
    if chat_id or to_user:
        channel = OutboundMessage.Channel.TEAMS_CHAT
    elif team_id and channel_id:
        channel = OutboundMessage.Channel.TEAMS_CHANNEL
    else:
        raise ValueError("Give either chat_id, to_user, or team_id and channel_id.")
    if len(body.encode()) > 28 * 1024:
        raise ValueError("Teams messages are limited to about 28 KB.")
    return _create(
        channel,
        TEAMS_JOB,
        {
            "chat_id": chat_id,
            "to_user": to_user,
            "team_id": team_id,
            "channel_id": channel_id,
            "body": body,
            "content_type": content_type,
            "resend_of": resend_of,
        },
        idempotency_key=idempotency_key,
        created_by=created_by,
        correlation_id=correlation_id,
    )


# --------------------------------------------------------------------------- budgets


class BudgetWait(TransientJobError):
    """The send's slot is later than a worker should wait: the job comes back then."""


def _wait_for_slot(message: OutboundMessage, keys: list[tuple[str, float]]) -> None:
    """Sleep until this message may be sent, or reserve a later slot and hand back."""
    now = timezone.now()
    slot = message.budget_slot_at
    # A reservation is honoured only while it is (nearly) on time: a late one could bunch up
    # with the slots after it, so it is dropped and a new one taken.
    if slot is not None and slot + timedelta(seconds=0.5) < now:
        slot = None
    if slot is None or any(
        throttle.blocked_for(key) > (slot - now).total_seconds() for key, _ in keys
    ):
        slot = throttle.reserve_slot(keys)
        OutboundMessage.objects.filter(pk=message.pk).update(budget_slot_at=slot)
        message.budget_slot_at = slot
    wait = (slot - timezone.now()).total_seconds()
    if wait > max_budget_wait():
        raise BudgetWait(
            f"Sending budget: this message's slot is in {wait:.0f} s",
            retry_after=max(0.0, wait - 0.2),
        )
    if wait > 0:
        time.sleep(wait)


# --------------------------------------------------------------------------- Graph calls


def _call(
    method: str, path: str, *, repeatable: bool | None = None, **kwargs: Any
) -> graph.GraphResponse:
    """Every Graph request of a send, through the client's one retry loop (graph.request).

    The posts and sends themselves pass `repeatable=False`: after a 429, a 5xx or a timeout
    Graph may have acted on them, so they are never repeated blindly; the job comes back and
    the recovery path looks for the message's tag (mail) or its post (Teams) first.
    """
    return graph.request(method, path, repeatable=repeatable, **kwargs)


# --------------------------------------------------------------------------- mail


def _note(message: OutboundMessage, **fields: Any) -> None:
    """Commit a change to the row at once (the next step may crash the worker)."""
    OutboundMessage.objects.filter(pk=message.pk).update(**fields)
    for name, value in fields.items():
        setattr(message, name, value)


def _recipients(addresses: list[str]) -> list[dict[str, Any]]:
    return [{"emailAddress": {"address": address}} for address in addresses]


def _tagged(message: OutboundMessage, base: str) -> list[dict[str, Any]]:
    flt = (
        f"singleValueExtendedProperties/Any(ep: ep/id eq '{TAG_PROPERTY_ID}' and "
        f"ep/value eq '{message.idempotency_key}')"
    )
    response = _call(
        "GET",
        f"{base}/messages",
        mailbox=message.sender,
        params={
            "$filter": flt,
            "$top": "10",
            "$select": "id,isDraft,internetMessageId,createdDateTime",
        },
        headers={"Prefer": 'IdType="ImmutableId"'},
    )
    return list((response.body or {}).get("value", []))


def _mark_sent(message: OutboundMessage, graph_id: str, internet_message_id: str = "") -> str:
    now = timezone.now()
    fields: dict[str, Any] = {
        "status": OutboundMessage.Status.SENT,
        "step": OutboundMessage.Step.DONE,
        "sent_at": now,
        "last_error": "",
    }
    if graph_id and not message.graph_message_id:
        fields["graph_message_id"] = graph_id[:255]
    if internet_message_id and not message.internet_message_id:
        fields["internet_message_id"] = internet_message_id[:255]
    with transaction.atomic():
        _note(message, **fields)
        _emit_outcome("message.sent", message)
    return "sent"


def _emit_outcome(event_type: str, message: OutboundMessage) -> None:
    """message.sent / message.failed, in the transaction that records the outcome."""
    emit(
        event_type,
        {
            "message": message.pk,
            "channel": "mail" if message.channel == "mail" else "teams",
            "status": message.status,
            "createdBy": message.created_by,
            "graphMessageId": message.graph_message_id or None,
            "internetMessageId": message.internet_message_id or None,
            "chatId": message.chat_id or None,
            "error": message.last_error or None,
            "links": {"message": f"/api/messages/{message.pk}"},
        },
        subject=f"message:{message.pk}",
    )


def deliver_mail(message: OutboundMessage) -> str:
    """Send one queued e-mail; safe to run again after a crash at any point."""
    base = f"/users/{message.sender}"
    # The sender's mailbox: its gate, 429 window and send slots (one key per mailbox).
    key = throttle.mailbox_key(message.sender)
    step = message.step
    draft_id = ""
    if step in (
        OutboundMessage.Step.DRAFT_REQUESTED,
        OutboundMessage.Step.DRAFT_CREATED,
        OutboundMessage.Step.SEND_REQUESTED,
    ):
        found = _tagged(message, base)
        sent = [m for m in found if not m.get("isDraft")]
        drafts = sorted(
            (m for m in found if m.get("isDraft")),
            key=lambda m: str(m.get("createdDateTime") or ""),
        )
        if sent:
            logger.info("Outbound message %s was already sent; not sending again", message.pk)
            return _mark_sent(
                message,
                message.graph_message_id or sent[0]["id"],
                sent[0].get("internetMessageId", ""),
            )
        if drafts:
            if step == OutboundMessage.Step.SEND_REQUESTED and message.step_at:
                # The send may be under way (Exchange shows a just-sent draft for a moment).
                settle = send_settle_seconds()
                age = (timezone.now() - message.step_at).total_seconds()
                if age < settle:
                    raise TransientJobError(
                        "A send of this draft was requested and its outcome is not known "
                        "yet; checking again shortly",
                        retry_after=settle - age,
                    )
            draft_id = drafts[0]["id"]
            for extra in drafts[1:]:  # a second draft can only come from a lagging search
                _call("DELETE", f"{base}/messages/{extra['id']}", mailbox=message.sender)
            _note(
                message,
                step=OutboundMessage.Step.DRAFT_CREATED,
                graph_draft_id=draft_id,
                internet_message_id=drafts[0].get("internetMessageId", "")[:255],
            )
        elif step == OutboundMessage.Step.SEND_REQUESTED and message.step_at:
            age = (timezone.now() - message.step_at).total_seconds()
            if age < 10 * send_settle_seconds():
                raise TransientJobError(
                    "The draft was sent or is being sent, but no sent item is visible yet; "
                    "checking again shortly",
                    retry_after=send_settle_seconds(),
                )
            raise PermanentJobError(
                f"Sending state unknown: the tagged draft of this message is gone from "
                f"{message.sender} and no sent item carries its tag. Check the mailbox's Sent "
                f"Items before sending it again."
            )
    if not draft_id:
        _note(message, step=OutboundMessage.Step.DRAFT_REQUESTED, step_at=timezone.now())
        draft = (
            _call(
                "POST",
                f"{base}/messages",
                repeatable=False,  # a second draft is not a second send, but is a mess
                mailbox=message.sender,
                headers={"Prefer": 'IdType="ImmutableId"'},
                json={
                    "subject": message.subject,
                    "importance": message.importance or "normal",
                    "body": {"contentType": message.content_type, "content": message.body},
                    "toRecipients": _recipients(message.to_recipients),
                    "ccRecipients": _recipients(message.cc_recipients),
                    "bccRecipients": _recipients(message.bcc_recipients),
                    "singleValueExtendedProperties": [
                        {"id": TAG_PROPERTY_ID, "value": message.idempotency_key}
                    ],
                },
            ).body
            or {}
        )
        draft_id = str(draft.get("id") or "")
        if not draft_id:
            raise TransientJobError("Graph created the draft but returned no id")
        _note(
            message,
            step=OutboundMessage.Step.DRAFT_CREATED,
            graph_draft_id=draft_id,
            internet_message_id=str(draft.get("internetMessageId") or "")[:255],
        )

    _wait_for_slot(message, [(key, throttle.slot_interval(mail_per_minute() / 60.0))])
    _note(message, step=OutboundMessage.Step.SEND_REQUESTED, step_at=timezone.now())
    try:
        _call(
            "POST",
            f"{base}/messages/{draft_id}/send",
            repeatable=False,
            mailbox=message.sender,
            # The draft's id is recorded as the sent message's: only an immutable id survives
            # the move to Sent Items (without the header Exchange gives the copy a new id).
            headers={"Prefer": 'IdType="ImmutableId"'},
        )
    except GraphError as exc:
        if not exc.may_have_acted:
            # Refused, or it never left this process: the draft is still a draft.
            _note(message, step=OutboundMessage.Step.DRAFT_CREATED, budget_slot_at=None)
        # Otherwise (a 429 may have been acted on, so may a 5xx or a timeout) the step stays
        # SEND_REQUESTED: the next run looks for the tagged sent item before sending again.
        raise
    return _mark_sent(message, draft_id)


# --------------------------------------------------------------------------- Teams


def _plain(content: str) -> str:
    return " ".join(html.unescape(_TAGS.sub(" ", content or "")).split())


def _target_path(message: OutboundMessage) -> str:
    if message.channel == OutboundMessage.Channel.TEAMS_CHAT:
        return f"/chats/{message.chat_id}/messages"
    return f"/teams/{message.team_id}/channels/{message.channel_id}/messages"


def _target_key(message: OutboundMessage) -> str:
    if message.channel == OutboundMessage.Channel.TEAMS_CHAT:
        return f"teams-chat:{message.chat_id}"
    return f"teams-channel:{message.team_id}/{message.channel_id}"


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _find_post(message: OutboundMessage, sender_id: str, keys: list[str]) -> dict | None:
    """Our earlier post in the chat or channel, if Graph lists one (see module docstring)."""
    since = (message.step_at or message.created_at) - MATCH_SKEW
    wanted = _plain(message.body)
    params: dict[str, Any] | None = (
        {"$top": "50", "$orderby": "createdDateTime desc"}
        if message.channel == OutboundMessage.Channel.TEAMS_CHAT
        else {"$top": "50"}
    )
    claimed = set(
        OutboundMessage.objects.filter(channel=message.channel)
        .exclude(pk=message.pk)
        .exclude(graph_message_id="")
        .values_list("graph_message_id", flat=True)
    )
    url: str = _target_path(message)
    candidates = []
    for _ in range(5):  # at most 250 recent messages
        # Read with the app token (Chat.Read.All / ChannelMessage.Read.All): the sender's
        # delegated token only has the Send scopes.
        try:
            page = _call("GET", url, windows=keys, params=params).body or {}
        except GraphError as exc:
            if exc.protected_api_refused:
                # Without the approval the earlier post cannot be looked for, and posting
                # again could send it twice: stop and say what to do.
                raise PermanentJobError(
                    "Cannot check whether the earlier post of this message reached the chat: "
                    "reading Teams messages with the app's token needs Microsoft's Teams "
                    "protected-API approval (docs/real-tenant.md), which this app lacks. "
                    "Look in the chat before resending it."
                ) from exc
            raise
        params = None
        older = False
        for item in page.get("value", []):
            created = _parse_time(item.get("createdDateTime"))
            if created is None or created < since:
                older = True
                continue
            author = ((item.get("from") or {}).get("user") or {}).get("id", "")
            if (
                author == sender_id
                and item.get("id") not in claimed
                and _plain((item.get("body") or {}).get("content", "")) == wanted
            ):
                candidates.append(item)
        next_link = page.get("@odata.nextLink")
        if older or not next_link:
            break
        url = next_link
    candidates.sort(key=lambda m: str(m.get("createdDateTime") or ""))
    return candidates[0] if candidates else None


def _sender() -> tuple[str, str]:
    """(upn, Graph user id) of the connected Teams sender, or a permanent, explained error."""

    account = teams_sender.current_delegated_account()
    if account is None or not account.token_cache_encrypted:
        raise PermanentJobError(NO_SENDER_MESSAGE)
    try:
        claims = auth.token_claims(teams_sender.delegated_token())
    except TokenError as exc:
        if exc.transient:
            raise
        raise PermanentJobError(
            f"The Teams sender account {account.upn} cannot send: {exc.message}"
        ) from None
    return account.upn, str(claims.get("oid") or "")


def _one_on_one_chat(message: OutboundMessage, sender_id: str, token_kind: str) -> None:
    """Find or create the sender's 1:1 chat with `to_user` (Graph answers a create of an
    existing oneOnOne chat with that chat, so a retry makes no second one)."""
    bind = "https://graph.microsoft.com/v1.0/users('{}')"
    member = {"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"]}
    chat = (
        _call(
            "POST",
            "/chats",
            windows=[f"teams-chat-create:{message.to_user.lower()}"],
            # Graph answers a create of an existing oneOnOne chat with that chat.
            repeatable=True,
            token_kind=token_kind,
            json={
                "chatType": "oneOnOne",
                "members": [
                    {**member, "user@odata.bind": bind.format(sender_id)},
                    {**member, "user@odata.bind": bind.format(message.to_user)},
                ],
            },
        ).body
        or {}
    )
    chat_id = str(chat.get("id") or "")
    if not chat_id:
        raise TransientJobError("Graph created the chat but returned no id")
    _note(message, chat_id=chat_id[:255])


def deliver_teams(message: OutboundMessage) -> str:
    """Post one queued Teams message; a retry looks for its earlier post first."""
    token_kind = teams_token_kind()
    if token_kind == "delegated":
        upn, sender_id = _sender()
    else:
        upn, sender_id = "(application)", ""
    if upn != message.sender:
        _note(message, sender=upn[:255])
    if message.to_user and not message.chat_id:
        _one_on_one_chat(message, sender_id, token_kind)
    target = _target_key(message)
    keys = [target] + ([f"teams-sender:{upn.lower()}"] if token_kind == "delegated" else [])
    if message.step == OutboundMessage.Step.POST_REQUESTED and message.step_at:
        age = (timezone.now() - message.step_at).total_seconds()
        settle = teams_settle_seconds()
        if age < settle:
            raise TransientJobError(
                "A post of this message was requested and its outcome "
                "is not known yet; checking the chat shortly",
                retry_after=settle - age,
            )
        found = _find_post(message, sender_id, [target])
        if found is not None:
            logger.info("Outbound message %s was already posted; not posting again", message.pk)
            return _mark_sent(message, str(found["id"]))
    intervals = {target: throttle.slot_interval(teams_per_second())}
    intervals.update({key: throttle.slot_interval(teams_sender_per_second()) for key in keys[1:]})
    _wait_for_slot(message, list(intervals.items()))
    _note(message, step=OutboundMessage.Step.POST_REQUESTED, step_at=timezone.now())
    try:
        posted = (
            _call(
                "POST",
                _target_path(message),
                windows=keys,
                repeatable=False,
                token_kind=token_kind,
                json={"body": {"contentType": message.content_type, "content": message.body}},
            ).body
            or {}
        )
    except GraphError as exc:
        if not exc.may_have_acted:
            _note(message, step=OutboundMessage.Step.NONE, budget_slot_at=None)
        # Otherwise the step stays POST_REQUESTED: the next run looks for this post in the
        # chat or channel (after MESSAGING_TEAMS_SETTLE_SECONDS) before posting again.
        if not exc.transient and token_kind != "delegated" and exc.status in (401, 403):
            raise PermanentJobError(f"{APP_ONLY_HINT} Graph said: {exc}") from exc
        raise
    return _mark_sent(message, str(posted.get("id") or ""))


# --------------------------------------------------------------------------- handler side


def deliver(message_id: int, job: Any = None) -> str:
    """The job handlers' body: send the message unless it is already sent."""
    message = OutboundMessage.objects.filter(pk=message_id).first()
    if message is None:
        return "missing"
    if message.status == OutboundMessage.Status.SENT:
        return "already-sent"
    # A conditional update, so a cancel (cancel_message) and this run never both win.
    started = (
        OutboundMessage.objects.filter(pk=message.pk)
        .exclude(status__in=[OutboundMessage.Status.SENT, OutboundMessage.Status.CANCELLED])
        .update(status=OutboundMessage.Status.SENDING, last_attempt_at=timezone.now())
    )
    if not started:
        return "cancelled"
    message.status = OutboundMessage.Status.SENDING
    try:
        if message.channel == OutboundMessage.Channel.MAIL:
            return deliver_mail(message)
        return deliver_teams(message)
    except Exception as exc:
        transient = getattr(exc, "transient", True)
        out_of_attempts = job is not None and job.attempts >= job.max_attempts
        fields: dict[str, Any] = {"last_error": f"{exc}"[:2000], "last_error_at": timezone.now()}
        if not transient or out_of_attempts:
            fields["status"] = OutboundMessage.Status.FAILED
        with transaction.atomic():
            OutboundMessage.objects.filter(pk=message.pk).update(**fields)
            if fields.get("status") == OutboundMessage.Status.FAILED:
                for name, value in fields.items():
                    setattr(message, name, value)
                _emit_outcome("message.failed", message)
        raise


# Steps after which nothing can have reached a recipient: a message there may be cancelled.
CANCELLABLE_STEPS = (
    OutboundMessage.Step.NONE,
    OutboundMessage.Step.DRAFT_REQUESTED,
    OutboundMessage.Step.DRAFT_CREATED,
)


class NotCancellable(Exception):
    """The message is sent, being sent, or may have been sent (the message says which)."""


def cancel_message(message_id: int) -> OutboundMessage:
    """Cancel a message that cannot have been sent yet, and its job, in the caller's
    transaction. A run in progress, or a step after which Graph may have sent it, refuses."""

    with transaction.atomic():
        message = OutboundMessage.objects.select_for_update().get(pk=message_id)
        job = (
            Job.objects.select_for_update().filter(pk=message.job_id).first()
            if message.job_id is not None
            else None
        )
        if message.status in (OutboundMessage.Status.SENT, OutboundMessage.Status.CANCELLED):
            raise NotCancellable(f"Message {message.pk} is already {message.status}.")
        if job is not None and job.status == Job.Status.RUNNING:
            raise NotCancellable(f"Message {message.pk} is being sent right now.")
        if message.step not in CANCELLABLE_STEPS:
            raise NotCancellable(
                f"Message {message.pk} may already have reached Graph "
                f"({message.get_step_display().lower()}); it cannot be "
                "cancelled."
            )
        OutboundMessage.objects.filter(pk=message.pk).update(
            status=OutboundMessage.Status.CANCELLED
        )
        if job is not None and job.status != Job.Status.SUCCEEDED:
            Job.objects.filter(pk=job.pk).update(
                status=Job.Status.CANCELLED, finished_at=timezone.now(), next_attempt_at=None
            )
        message.status = OutboundMessage.Status.CANCELLED
    return message


def send_test_message(
    actor: Any,
    *,
    channel: str,
    sender: str = "",
    to: str = "",
    chat_id: str = "",
    team_id: str = "",
    channel_id: str = "",
    text: str = "",
) -> OutboundMessage:
    """Queue a test e-mail or Teams message (console and `send_test_message`), audited.

    Requires `verify_integration`: a test send is part of checking the integration.
    """

    require(actor, "verify_integration", action="message.send_test", target_type="message")
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S %Z")
    text = text or f"Fleet Graph Portal test message ({stamp})"
    with transaction.atomic():
        if channel == "mail":
            message = send_mail(
                sender, [to], f"Fleet Graph Portal test ({stamp})", text, created_by=actor.name
            )
        else:
            message = send_teams_message(
                text, chat_id=chat_id, team_id=team_id, channel_id=channel_id, created_by=actor.name
            )
        record(
            "message.send_test",
            actor=actor,
            target_type="outbound_message",
            target_id=message.pk,
            params={
                "channel": message.channel,
                "sender": sender,
                "to": to,
                "chat_id": chat_id,
                "team_id": team_id,
                "channel_id": channel_id,
            },
        )
    return message
