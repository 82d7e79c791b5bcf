"""Graph routes: chats, chat messages, teams, channels, Teams delta and POST rules."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from .delta import StreamKey, delta_response
from .graph_common import (
    Ctx,
    Router,
    collection,
    decode_skiptoken,
    encode_skiptoken,
    entity,
    next_link,
    raise_if_throttled,
    require,
    require_protected_api,
    user_or_404,
)
from .httptypes import GraphError, Response, empty_response, iso
from .odata import apply_select, compile_filter, parse_select, parse_top
from .state import Chat, Team

CHAT_READ_APP = ("Chat.Read.All", "Chat.ReadWrite.All", "Chat.ReadBasic.All")
CHAT_READ_DEL = ("Chat.Read", "Chat.ReadWrite", "Chat.ReadBasic")
CHANNEL_READ_APP = (
    "ChannelMessage.Read.All",
    "ChannelMessage.ReadWrite.All",
    "ChannelMessage.Read.Group",
)
CHANNEL_READ_DEL = (
    "ChannelMessage.Read.All",
    "ChannelMessage.ReadWrite",
    "Group.Read.All",
    "Group.ReadWrite.All",
)
IMPORT_ONLY = (
    "Message POST is allowed in application-only context only for import purposes. "
    "Refer to https://docs.microsoft.com/microsoftteams/platform/graph-api/"
    "import-messages/import-external-messages-to-teams for more details."
)
EIGHT_MONTHS = timedelta(days=243)
# "chatMessage: delta" pages with $top (at most 50); Prefer: odata.maxpagesize is not honoured.
GET_ALL_MESSAGES_MAX_TOP = 50


def _forbidden(ctx: Ctx) -> GraphError:
    return GraphError(
        403,
        "Forbidden",
        "Missing role permissions on the request. API requires "
        "one of 'Chat.Read.All, Chat.ReadWrite.All'. Roles on the request "
        f"'{ctx.principal.granted_text}'. Resource specific consent permissions "
        "on the request ''.",
    )


def chat_or_404(ctx: Ctx, chat_id: str) -> Chat:
    chat = ctx.state.chats.get(chat_id)
    if chat is None:
        raise GraphError(404, "NotFound", f"Chat '{chat_id}' was not found.")
    return chat


def team_or_404(ctx: Ctx, team_id: str) -> Team:
    team = ctx.state.teams.get(team_id)
    if team is None:
        raise GraphError(404, "NotFound", "No team found with Group Id " + team_id)
    return team


def _read_chats(ctx: Ctx, *, protected: bool = False) -> None:
    p = ctx.principal
    perms = CHAT_READ_DEL if p.delegated else CHAT_READ_APP
    if not p.has_any(*perms):
        raise _forbidden(ctx)
    if protected:
        require_protected_api(ctx)


def _member_check(ctx: Ctx, members: list[str]) -> None:
    p = ctx.principal
    if p.delegated and p.user_id not in members:
        raise GraphError(
            403, "Forbidden", "Forbidden: the caller is not a member of this conversation."
        )


def _page(
    ctx: Ctx, items: list[dict[str, Any]], default_top: int, max_top: int, context: str
) -> Response:
    q = ctx.query
    top = min(parse_top(q.get("$top"), max_top) or default_top, max_top)
    offset = int(decode_skiptoken(q["$skiptoken"]).get("o", 0)) if q.get("$skiptoken") else 0
    select = parse_select(q.get("$select"))
    page = [apply_select(m, select) for m in items[offset : offset + top]]
    nxt = None
    if offset + top < len(items):
        nxt = next_link(ctx, {"$skiptoken": encode_skiptoken({"o": offset + top})})
    return collection(
        ctx, context, page, nxt, extra={"@odata.count": len(page)} if "chats" in context else None
    )


# --------------------------------------------------------------------------- chats


def list_user_chats(ctx: Ctx) -> Response:
    _read_chats(ctx)
    with ctx.state.lock:
        user = user_or_404(ctx, ctx.params["user"])
        if ctx.principal.delegated and user["id"] != ctx.principal.user_id:
            raise GraphError(
                403,
                "Forbidden",
                "Requested API is not supported in delegated context for another user.",
            )
        chats = [dict(c.data) for c in ctx.state.chats_of(user["id"])]
    chats.sort(key=lambda c: c.get("lastUpdatedDateTime") or "", reverse=True)
    return _page(ctx, chats, 50, 50, f"users('{user['id']}')/chats")


_BIND = re.compile(r"users\('([^']+)'\)$")


def create_chat(ctx: Ctx) -> Response:
    """POST /chats for a oneOnOne chat: Graph answers 201 with the existing chat of the two
    members when there is one, so a retried create never makes a second chat."""
    p = ctx.principal
    if not p.delegated:
        raise GraphError(403, "Forbidden", "Creating chats needs a delegated token here.")
    require(
        ctx,
        (),
        ("Chat.Create", "Chat.ReadWrite"),
        code="Forbidden",
        message="Missing scope permissions on the request. API requires one of "
        "'Chat.Create, Chat.ReadWrite'.",
    )
    body = ctx.body_json()
    if body.get("chatType") != "oneOnOne":
        raise GraphError(400, "BadRequest", "Only oneOnOne chats are emulated.")
    members = body.get("members")
    if not isinstance(members, list) or len(members) != 2:
        raise GraphError(400, "BadRequest", "A oneOnOne chat has exactly two members.")
    ids = []
    with ctx.state.lock:
        for member in members:
            match = _BIND.search(str((member or {}).get("user@odata.bind") or ""))
            user = ctx.state.resolve_user(match.group(1)) if match else None
            if user is None:
                raise GraphError(404, "NotFound", "A chat member was not found.")
            ids.append(user["id"])
        if p.user_id not in ids or ids[0] == ids[1]:
            raise GraphError(400, "BadRequest", "The caller must be one of two members.")
        for chat in ctx.state.chats_of(ids[0]):
            if chat.data.get("chatType") == "oneOnOne" and set(chat.members) == set(ids):
                return entity(ctx, "chats/$entity", dict(chat.data), status=201)
        cid = f"19:{ids[0]}_{ids[1]}@unq.gbl.spaces"
        created = iso(ctx.state.clock.now())
        data = {
            "id": cid,
            "topic": None,
            "createdDateTime": created,
            "lastUpdatedDateTime": created,
            "chatType": "oneOnOne",
            "webUrl": f"https://teams.microsoft.com/l/chat/{cid}/0",
            "tenantId": ctx.state.tenant_id,
            "onlineMeetingInfo": None,
            "viewpoint": None,
        }
        ctx.state.add_chat(Chat(data=data, members=ids))
    return entity(ctx, "chats/$entity", dict(data), status=201)


def get_chat(ctx: Ctx) -> Response:
    _read_chats(ctx)
    with ctx.state.lock:
        chat = chat_or_404(ctx, ctx.params["chat"])
        _member_check(ctx, chat.members)
        data = dict(chat.data)
    return entity(ctx, "chats/$entity", data)


def list_chat_members(ctx: Ctx) -> Response:
    """GET /chats/{id}/members ("List members of a chat"): aadUserConversationMember items."""
    _read_chats(ctx)
    with ctx.state.lock:
        chat = chat_or_404(ctx, ctx.params["chat"])
        _member_check(ctx, chat.members)
        members = []
        for user_id in chat.members:
            user = ctx.state.users.get(user_id) or {}
            members.append(
                {
                    "@odata.type": "#microsoft.graph.aadUserConversationMember",
                    "id": f"{chat.data['id']}#{user_id}",
                    "roles": ["owner"],
                    "displayName": user.get("displayName"),
                    "visibleHistoryStartDateTime": "0001-01-01T00:00:00Z",
                    "userId": user_id,
                    "email": user.get("mail"),
                    "tenantId": ctx.state.tenant_id,
                }
            )
    return collection(ctx, f"chats('{chat.data['id']}')/members", members)


def list_chat_messages(ctx: Ctx) -> Response:
    _read_chats(ctx, protected=True)
    with ctx.state.lock:
        chat = chat_or_404(ctx, ctx.params["chat"])
        _member_check(ctx, chat.members)
        msgs = [dict(m) for m in reversed(chat.messages.values())]
    return _page(ctx, msgs, 20, 50, f"chats('{chat.data['id']}')/messages")


def get_chat_message(ctx: Ctx) -> Response:
    _read_chats(ctx, protected=True)
    with ctx.state.lock:
        chat = chat_or_404(ctx, ctx.params["chat"])
        _member_check(ctx, chat.members)
        msg = chat.messages.get(ctx.params["message"])
        if msg is None:
            raise GraphError(404, "NotFound", "Message not found.")
        msg = dict(msg)
    return entity(ctx, f"chats('{chat.data['id']}')/messages/$entity", msg)


def _post_body(ctx: Ctx) -> tuple[str, str]:
    body = ctx.body_json()
    b = body.get("body")
    if not isinstance(b, dict) or not str(b.get("content") or "").strip():
        raise GraphError(400, "BadRequest", "Message body cannot be empty.")
    ctype = str(b.get("contentType") or "text").lower()
    if ctype not in ("text", "html"):
        raise GraphError(400, "BadRequest", f"Invalid content type '{ctype}'.")
    content = str(b["content"])
    if len(content.encode()) > 28 * 1024:
        raise GraphError(413, "RequestEntityTooLarge", "Message size exceeds the 28 KB limit.")
    return content, ctype


def _app_only_post(ctx: Ctx) -> None:
    p = ctx.principal
    if p.delegated:
        return
    if not p.has_any("Teamwork.Migrate.All"):
        raise GraphError(
            403,
            "Forbidden",
            "Missing role permissions on the request. API "
            "requires one of 'Teamwork.Migrate.All'. Roles on the request "
            f"'{p.granted_text}'. Resource specific consent permissions on the "
            "request ''.",
        )
    raise GraphError(401, "Unauthorized", IMPORT_ONLY)


def _throttle_post(ctx: Ctx, resource: str) -> None:
    raise_if_throttled(ctx, ctx.app.throttler.teams_post(ctx.principal.app_id, resource))


def post_chat_message(ctx: Ctx) -> Response:
    _app_only_post(ctx)
    require(
        ctx,
        (),
        ("ChatMessage.Send", "Chat.ReadWrite", "Group.ReadWrite.All"),
        code="Forbidden",
        message="Missing scope permissions on the request. API requires "
        "one of 'ChatMessage.Send, Chat.ReadWrite, Group.ReadWrite.All'.",
    )
    content, ctype = _post_body(ctx)
    with ctx.state.lock:
        chat = chat_or_404(ctx, ctx.params["chat"])
        _member_check(ctx, chat.members)
    _throttle_post(ctx, "chat:" + chat.data["id"])
    with ctx.state.lock:
        msg = ctx.state.chat_message(
            ctx.principal.user_id or "", content, ctype, chat_id=chat.data["id"]
        )
        ctx.state.post_chat_message(chat.data["id"], msg)
        ctx.state.record_sent(
            {
                "kind": "chat",
                "app_id": ctx.principal.app_id,
                "sender": ctx.principal.upn,
                "chat_id": chat.data["id"],
                "message_id": msg["id"],
                "body": msg["body"],
            }
        )
        out = dict(msg)
    return entity(ctx, f"chats('{chat.data['id']}')/messages/$entity", out, status=201)


def soft_delete_chat_message(ctx: Ctx) -> Response:
    """POST /users/{id}/chats/{id}/messages/{id}/softDelete ("chatMessage: softDelete"):
    content gone, deletedDateTime set, subscribers get `deleted`."""
    with ctx.state.lock:
        chat = chat_or_404(ctx, ctx.params["chat"])
        _member_check(ctx, chat.members)
        if ctx.params["message"] not in chat.messages:
            raise GraphError(404, "NotFound", "Message not found.")
        ctx.state.soft_delete_chat_message(chat.data["id"], ctx.params["message"])
    return empty_response(204)


def all_messages(ctx: Ctx) -> Response:
    """GET /users/{id}/chats/getAllMessages (non-delta export API)."""
    if ctx.principal.delegated:
        raise GraphError(403, "Forbidden", "Requested API is not supported in delegated context")
    _read_chats(ctx, protected=True)
    q = ctx.query
    with ctx.state.lock:
        user = user_or_404(ctx, ctx.params["user"])
        msgs = [dict(m) for c in ctx.state.chats_of(user["id"]) for m in c.messages.values()]
    if q.get("$filter"):
        pred = compile_filter(q["$filter"])
        msgs = [m for m in msgs if pred(m)]
    msgs.sort(key=lambda m: m["createdDateTime"])
    return _page(ctx, msgs, 20, 50, "Collection(chatMessage)")


def _delta_item(msg: dict[str, Any] | None, select: list[str] | None) -> dict[str, Any] | None:
    if msg is None:
        return None
    return {"@odata.type": "#microsoft.graph.chatMessage", **apply_select(msg, select)}


def chats_delta(ctx: Ctx) -> Response:
    if ctx.principal.delegated:
        raise GraphError(403, "Forbidden", "Requested API is not supported in delegated context")
    _read_chats(ctx, protected=True)
    with ctx.state.lock:
        user = user_or_404(ctx, ctx.params["user"])
        streams: list[StreamKey] = [("chat", c.data["id"]) for c in ctx.state.chats_of(user["id"])]
        oldest = iso(ctx.state.clock.now() - EIGHT_MONTHS)

        def render(key: tuple[str, ...], item_id: str, select: list[str] | None):
            chat = ctx.state.chats.get(key[1])
            msg = chat.messages.get(item_id) if chat else None
            if msg is None or msg["createdDateTime"] < oldest:
                return None
            return _delta_item(msg, select)

        return delta_response(
            ctx,
            scope={"kind": "chats", "user_id": user["id"]},
            streams=streams,
            render=render,
            context="Collection(chatMessage)",
            removed_type="#microsoft.graph.chatMessage",
            max_top=GET_ALL_MESSAGES_MAX_TOP,
        )


def chat_delta(ctx: Ctx) -> Response:
    """GET /chats/{id}/messages/delta: in the v1.0 metadata (the SDKs generate it), not on
    the v1.0 docs page, which documents getAllMessages/delta [U: live availability]."""
    _read_chats(ctx, protected=True)
    with ctx.state.lock:
        chat = chat_or_404(ctx, ctx.params["chat"])
        _member_check(ctx, chat.members)
        chat_id = chat.data["id"]
        return delta_response(
            ctx,
            scope={"kind": "chat", "chat": chat_id},
            streams=[("chat", chat_id)],
            render=lambda key, item_id, select: _delta_item(chat.messages.get(item_id), select),
            context="Collection(chatMessage)",
            removed_type="#microsoft.graph.chatMessage",
        )


# --------------------------------------------------------------------------- teams


def _read_channels(ctx: Ctx) -> None:
    p = ctx.principal
    if not p.has_any(*(CHANNEL_READ_DEL if p.delegated else CHANNEL_READ_APP)):
        raise GraphError(
            403,
            "Forbidden",
            "Missing role permissions on the request. API "
            "requires one of 'ChannelMessage.Read.All, ChannelMessage.Read.Group'. "
            f"Roles on the request '{p.granted_text}'.",
        )
    require_protected_api(ctx)


def _channel(ctx: Ctx):
    team = team_or_404(ctx, ctx.params["team"])
    ch = team.channels.get(ctx.params["channel"])
    if ch is None:
        raise GraphError(404, "NotFound", "Channel not found.")
    return team, ch


def get_team(ctx: Ctx) -> Response:
    require(
        ctx,
        (
            "Team.ReadBasic.All",
            "TeamSettings.Read.All",
            "Group.Read.All",
            "Directory.Read.All",
            "ChannelMessage.Read.All",
        ),
        ("Team.ReadBasic.All", "Group.Read.All", "ChannelMessage.Send"),
        code="Forbidden",
        message="Missing role permissions on the request.",
    )
    with ctx.state.lock:
        team = team_or_404(ctx, ctx.params["team"])
        data = dict(team.data)
    return entity(ctx, "teams/$entity", data)


def list_channels(ctx: Ctx) -> Response:
    require(
        ctx,
        (
            "Channel.ReadBasic.All",
            "ChannelSettings.Read.All",
            "Group.Read.All",
            "ChannelMessage.Read.All",
        ),
        ("Channel.ReadBasic.All", "Group.Read.All", "ChannelMessage.Send"),
        code="Forbidden",
        message="Missing role permissions on the request.",
    )
    with ctx.state.lock:
        team = team_or_404(ctx, ctx.params["team"])
        items = [dict(c.data) for c in team.channels.values()]
    return collection(
        ctx, f"teams('{team.data['id']}')/channels", items, extra={"@odata.count": len(items)}
    )


def joined_teams(ctx: Ctx) -> Response:
    with ctx.state.lock:
        user = user_or_404(ctx, ctx.params["user"])
        items = [dict(t.data) for t in ctx.state.teams.values() if user["id"] in t.members]
    return collection(ctx, "teams", items, extra={"@odata.count": len(items)})


def list_channel_messages(ctx: Ctx) -> Response:
    _read_channels(ctx)
    with ctx.state.lock:
        team, ch = _channel(ctx)
        _member_check(ctx, team.members)
        msgs = [dict(m) for m in reversed(ch.messages.values())]
    return _page(
        ctx, msgs, 20, 50, f"teams('{team.data['id']}')/channels('{ch.data['id']}')/messages"
    )


def channel_delta(ctx: Ctx) -> Response:
    _read_channels(ctx)
    with ctx.state.lock:
        team, ch = _channel(ctx)
        key = ("channel", team.data["id"], ch.data["id"])

        return delta_response(
            ctx,
            scope={"kind": "channel", "team": team.data["id"], "channel": ch.data["id"]},
            streams=[key],
            render=lambda k, item_id, select: _delta_item(ch.messages.get(item_id), select),
            context="Collection(chatMessage)",
            removed_type="#microsoft.graph.chatMessage",
        )


def post_channel_message(ctx: Ctx) -> Response:
    _app_only_post(ctx)
    require(
        ctx,
        (),
        ("ChannelMessage.Send", "Group.ReadWrite.All"),
        code="Forbidden",
        message="Missing scope permissions on the request. API requires one of "
        "'ChannelMessage.Send, Group.ReadWrite.All'.",
    )
    content, ctype = _post_body(ctx)
    with ctx.state.lock:
        team, ch = _channel(ctx)
        _member_check(ctx, team.members)
    _throttle_post(ctx, "channel:" + ch.data["id"])
    with ctx.state.lock:
        msg = ctx.state.chat_message(
            ctx.principal.user_id or "",
            content,
            ctype,
            team_id=team.data["id"],
            channel_id=ch.data["id"],
        )
        ctx.state.post_channel_message(team.data["id"], ch.data["id"], msg)
        ctx.state.record_sent(
            {
                "kind": "channel",
                "app_id": ctx.principal.app_id,
                "sender": ctx.principal.upn,
                "team_id": team.data["id"],
                "channel_id": ch.data["id"],
                "message_id": msg["id"],
                "body": msg["body"],
            }
        )
        out = dict(msg)
    return entity(
        ctx,
        f"teams('{team.data['id']}')/channels('{ch.data['id']}')/messages/$entity",
        out,
        status=201,
    )


def register(router: Router) -> None:
    router.add("GET", "users/{user}/chats", list_user_chats)
    router.add("GET", "users/{user}/chats/getAllMessages", all_messages)
    router.add("GET", "users/{user}/chats/getAllMessages/delta", chats_delta)
    router.add("GET", "users/{user}/joinedTeams", joined_teams)
    router.add("POST", "chats", create_chat)
    router.add("GET", "chats/{chat}", get_chat)
    router.add("GET", "chats/{chat}/members", list_chat_members)
    router.add("GET", "chats/{chat}/messages", list_chat_messages)
    router.add("POST", "chats/{chat}/messages", post_chat_message, teams_post=True)
    router.add("GET", "chats/{chat}/messages/delta", chat_delta)
    router.add("GET", "chats/{chat}/messages/{message}", get_chat_message)
    router.add(
        "POST", "users/{user}/chats/{chat}/messages/{message}/softDelete", soft_delete_chat_message
    )
    router.add("GET", "teams/{team}", get_team)
    router.add("GET", "teams/{team}/channels", list_channels)
    router.add("GET", "teams/{team}/channels/{channel}/messages", list_channel_messages)
    router.add("GET", "teams/{team}/channels/{channel}/messages/delta", channel_delta)
    router.add(
        "POST", "teams/{team}/channels/{channel}/messages", post_channel_message, teams_post=True
    )
