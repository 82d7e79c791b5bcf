"""Posting one queued Teams message (the job `graph.send_teams`; Microsoft Learn: "Send
chatMessage in a channel or a chat").

Posted with the delegated sender's token (app-only tokens may only import messages). Graph has
no idempotency key for chat posts, so the row's step is committed before the POST; a run that
finds the step set lists the chat's (or channel's) recent messages and takes a message from the
sender account with the same content, created since the post was requested and not claimed by
another OutboundMessage (a unique constraint), as the one it posted. Remaining window, honestly:
if Graph lists a new message later than MESSAGING_TEAMS_SETTLE_SECONDS after it was posted, or
somebody posts the identical text as the sender account into that chat within that time, a
retry can post twice or not at all. Two ways lead into that path: a crash after the POST and
before its result is recorded, and an answer after which Graph may have posted anyway (a 429, a
5xx, a timeout: graph.request never repeats these posts).
"""

from __future__ import annotations

import html
import logging
import re
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from integrations.graph import auth, throttle
from integrations.graph.errors import GraphError, TokenError
from integrations.microsoft import teams_sender
from integrations.microsoft.messaging import budgets, steps
from integrations.microsoft.models import OutboundMessage
from portal.jobs.errors import PermanentJobError, TransientJobError

logger = logging.getLogger(__name__)

NO_SENDER_MESSAGE = (
    "No Teams sender account is connected: an admin connects one on the Credentials page."
)
APP_ONLY_HINT = (
    "Graph accepts Teams posts from application tokens only for importing "
    "messages; the portal posts as the connected Teams sender account."
)
_TAGS = re.compile(r"<[^>]+>")
MATCH_SKEW = timedelta(minutes=5)  # clock difference tolerated between us and Graph


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
            page = steps.call("GET", url, windows=keys, params=params).body or {}
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
        steps.call(
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
    steps.note(message, chat_id=chat_id[:255])


def deliver_teams(message: OutboundMessage) -> str:
    """Post one queued Teams message; a retry looks for its earlier post first."""
    token_kind = budgets.teams_token_kind()
    if token_kind == "delegated":
        upn, sender_id = _sender()
    else:
        upn, sender_id = "(application)", ""
    if upn != message.sender:
        steps.note(message, sender=upn[:255])
    if message.to_user and not message.chat_id:
        _one_on_one_chat(message, sender_id, token_kind)
    target = _target_key(message)
    keys = [target] + ([f"teams-sender:{upn.lower()}"] if token_kind == "delegated" else [])
    if message.step == OutboundMessage.Step.POST_REQUESTED and message.step_at:
        age = (timezone.now() - message.step_at).total_seconds()
        settle = budgets.teams_settle_seconds()
        if age < settle:
            raise TransientJobError(
                "A post of this message was requested and its outcome "
                "is not known yet; checking the chat shortly",
                retry_after=settle - age,
            )
        found = _find_post(message, sender_id, [target])
        if found is not None:
            logger.info("Outbound message %s was already posted; not posting again", message.pk)
            return steps.mark_sent(message, str(found["id"]))
    intervals = {target: throttle.slot_interval(budgets.teams_per_second())}
    intervals.update(
        {key: throttle.slot_interval(budgets.teams_sender_per_second()) for key in keys[1:]}
    )
    budgets.wait_for_slot(message, list(intervals.items()))
    steps.note(message, step=OutboundMessage.Step.POST_REQUESTED, step_at=timezone.now())
    try:
        posted = (
            steps.call(
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
            steps.note(message, step=OutboundMessage.Step.NONE, budget_slot_at=None)
        # Otherwise the step stays POST_REQUESTED: the next run looks for this post in the
        # chat or channel (after MESSAGING_TEAMS_SETTLE_SECONDS) before posting again.
        if not exc.transient and token_kind != "delegated" and exc.status in (401, 403):
            raise PermanentJobError(f"{APP_ONLY_HINT} Graph said: {exc}") from exc
        raise
    return steps.mark_sent(message, str(posted.get("id") or ""))
