"""Graph routes: users, mail folders, messages, message delta, sendMail, drafts."""

from __future__ import annotations

import base64
import binascii
import copy
import email
import email.policy
import time
from typing import Any

from .delta import delta_response
from .graph_common import (
    Ctx,
    Router,
    collection,
    decode_skiptoken,
    encode_skiptoken,
    entity,
    next_link,
    require,
    require_directory,
    user_or_404,
)
from .httptypes import GraphError, Response, empty_response
from .identity import Principal
from .messages import build_message, copy_for_recipient, email_address, render_message
from .odata import apply_select, compile_filter, parse_select, parse_top, prefers_immutable_id
from .state import DEFAULT_USER_PROPS, EmulatorState

MAIL_READ_APP = ("Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic", "Mail.ReadBasic.All")
MAIL_READ_DELEGATED = (
    "Mail.Read",
    "Mail.ReadWrite",
    "Mail.ReadBasic",
    "Mail.Read.Shared",
    "Mail.ReadWrite.Shared",
)
ACCESS_DENIED = "Access is denied. Check credentials and try again."


# --------------------------------------------------------------------------- users


def render_user(user: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    if not select:
        return {k: user.get(k) for k in DEFAULT_USER_PROPS}
    wanted = {s.lower() for s in select}
    out = {k: v for k, v in user.items() if k.lower() in wanted}
    for s in select:
        if not any(k.lower() == s.lower() for k in out):
            out[s] = None
    out.setdefault("id", user["id"])
    return out


def list_users(ctx: Ctx) -> Response:
    require_directory(ctx)
    q = ctx.query
    select = parse_select(q.get("$select"))
    top = parse_top(q.get("$top")) or 100
    with ctx.state.lock:
        users = list(ctx.state.users.values())
    if q.get("$filter"):
        pred = compile_filter(q["$filter"])
        users = [u for u in users if pred(u)]
    offset = int(decode_skiptoken(q["$skiptoken"]).get("o", 0)) if q.get("$skiptoken") else 0
    page = users[offset : offset + top]
    nxt = None
    if offset + top < len(users):
        nxt = next_link(ctx, {"$skiptoken": encode_skiptoken({"o": offset + top})})
    ctx_name = "users" if not select else f"users({','.join(select)})"
    return collection(ctx, ctx_name, [render_user(u, select) for u in page], nxt)


def get_user(ctx: Ctx) -> Response:
    p = ctx.principal
    with ctx.state.lock:
        user = user_or_404(ctx, ctx.params["user"])
    if not (p.delegated and user["id"] == p.user_id):
        require_directory(ctx)
    select = parse_select(ctx.query.get("$select"))
    return entity(ctx, "users/$entity", render_user(user, select))


# --------------------------------------------------------------------------- mail helpers


def mailbox_user(ctx: Ctx, write: bool = False, send: bool = False) -> dict[str, Any]:
    p = ctx.principal
    perms_app: tuple[str, ...]
    perms_del: tuple[str, ...]
    if send:
        perms_app, perms_del = ("Mail.Send",), ("Mail.Send", "Mail.Send.Shared")
    elif write:
        perms_app, perms_del = ("Mail.ReadWrite",), ("Mail.ReadWrite", "Mail.ReadWrite.Shared")
    else:
        perms_app, perms_del = MAIL_READ_APP, MAIL_READ_DELEGATED
    require(ctx, perms_app, perms_del)
    ident = ctx.params["user"]
    user = ctx.state.resolve_user(ident)
    if user is None:
        raise GraphError(404, "ErrorInvalidUser", f"The requested user '{ident}' is invalid.")
    if p.delegated and user["id"] != p.user_id and not any(s.endswith(".Shared") for s in p.scopes):
        raise GraphError(403, "ErrorAccessDenied", ACCESS_DENIED)
    return user


def folder_or_404(ctx: Ctx, user_id: str, folder: str) -> str:
    fid = ctx.state.resolve_folder(user_id, folder)
    if fid is None:
        raise GraphError(
            404, "ErrorItemNotFound", "The specified object was not found in the store."
        )
    return fid


def message_or_404(ctx: Ctx, user_id: str, message_id: str) -> dict[str, Any]:
    msg = ctx.state.mailboxes[user_id].messages.get(message_id)
    if msg is None:
        raise GraphError(
            404, "ErrorItemNotFound", "The specified object was not found in the store."
        )
    return msg


# --------------------------------------------------------------------------- folders


def list_folders(ctx: Ctx) -> Response:
    with ctx.state.lock:
        user = mailbox_user(ctx)
        folders = [apply_select(f, None) for f in ctx.state.mailboxes[user["id"]].folders.values()]
    return collection(ctx, f"users('{user['id']}')/mailFolders", folders)


def get_folder(ctx: Ctx) -> Response:
    with ctx.state.lock:
        user = mailbox_user(ctx)
        fid = folder_or_404(ctx, user["id"], ctx.params["folder"])
        folder = apply_select(
            ctx.state.mailboxes[user["id"]].folders[fid], parse_select(ctx.query.get("$select"))
        )
    return entity(ctx, f"users('{user['id']}')/mailFolders/$entity", folder)


# --------------------------------------------------------------------------- messages


def list_messages(ctx: Ctx) -> Response:
    q = ctx.query
    select = parse_select(q.get("$select"))
    top = parse_top(q.get("$top"), 1000) or 10
    try:
        skip = max(0, int(q.get("$skip") or 0))
    except ValueError as exc:
        raise GraphError(400, "BadRequest", f"Invalid $skip value '{q.get('$skip')}'.") from exc
    with ctx.state.lock:
        user = mailbox_user(ctx)
        msgs = list(ctx.state.mailboxes[user["id"]].messages.values())
        if "folder" in ctx.params:
            fid = folder_or_404(ctx, user["id"], ctx.params["folder"])
            msgs = [m for m in msgs if m["parentFolderId"] == fid]
        if q.get("$filter"):
            pred = compile_filter(q["$filter"])
            msgs = [m for m in msgs if pred(m)]
        order = (q.get("$orderby") or "receivedDateTime desc").strip().lower()
        field_name, _, direction = order.partition(" ")
        key_name = {
            "receiveddatetime": "receivedDateTime",
            "sentdatetime": "sentDateTime",
            "createddatetime": "createdDateTime",
            "lastmodifieddatetime": "lastModifiedDateTime",
            "subject": "subject",
        }.get(field_name, "receivedDateTime")
        msgs.sort(
            key=lambda m: (m.get(key_name) or "", m["id"]), reverse=direction.strip() != "asc"
        )
        page = [render_message(m, select, q.get("$expand")) for m in msgs[skip : skip + top]]
    nxt = next_link(ctx, {"$skip": str(skip + top)}) if skip + top < len(msgs) else None
    return collection(ctx, f"users('{user['id']}')/messages", page, nxt)


def get_message(ctx: Ctx) -> Response:
    q = ctx.query
    with ctx.state.lock:
        user = mailbox_user(ctx)
        msg = message_or_404(ctx, user["id"], ctx.params["message"])
        if "folder" in ctx.params:
            fid = folder_or_404(ctx, user["id"], ctx.params["folder"])
            if msg["parentFolderId"] != fid:
                raise GraphError(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
        out = render_message(msg, parse_select(q.get("$select")), q.get("$expand"))
    return entity(ctx, f"users('{user['id']}')/messages/$entity", out)


UPDATABLE = {"isRead", "categories", "flag", "importance", "inferenceClassification"}
DRAFT_UPDATABLE = {
    "subject",
    "body",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "internetMessageHeaders",
    "singleValueExtendedProperties",
}


def update_message(ctx: Ctx) -> Response:
    body = ctx.body_json()
    with ctx.state.lock:
        user = mailbox_user(ctx, write=True)
        msg = message_or_404(ctx, user["id"], ctx.params["message"])
        allowed = UPDATABLE | (DRAFT_UPDATABLE if msg.get("isDraft") else set())
        changes: dict[str, Any] = {}
        for k, v in body.items():
            if k.startswith("@odata"):
                continue
            if k not in allowed:
                raise GraphError(
                    400,
                    "ErrorInvalidPropertyUpdateSentMessage"
                    if k in DRAFT_UPDATABLE
                    else "ErrorInvalidProperty",
                    f"The property '{k}' cannot be updated on this item.",
                )
            if k == "singleValueExtendedProperties":
                merged = {p["id"].lower(): p for p in msg.get(k) or []}
                merged.update({p["id"].lower(): p for p in _ext_props(v)})
                v = list(merged.values())
            changes[k] = v
        msg = ctx.state.update_message(user["id"], msg["id"], changes)
        out = render_message(msg, None)
    return entity(ctx, f"users('{user['id']}')/messages/$entity", out)


def delete_message(ctx: Ctx) -> Response:
    with ctx.state.lock:
        user = mailbox_user(ctx, write=True)
        msg = message_or_404(ctx, user["id"], ctx.params["message"])
        ctx.state.delete_message(user["id"], msg["id"])
    return empty_response(204)


def move_message(ctx: Ctx) -> Response:
    body = ctx.body_json()
    with ctx.state.lock:
        user = mailbox_user(ctx, write=True)
        msg = message_or_404(ctx, user["id"], ctx.params["message"])
        dest = folder_or_404(ctx, user["id"], str(body.get("destinationId") or ""))
        msg = ctx.state.move_message(user["id"], msg["id"], dest)
        out = render_message(msg, None)
    return entity(ctx, f"users('{user['id']}')/messages/$entity", out, status=201)


def messages_delta(ctx: Ctx) -> Response:
    with ctx.state.lock:
        user = mailbox_user(ctx)
        mb = ctx.state.mailboxes[user["id"]]
        if "folder" in ctx.params:
            fid = folder_or_404(ctx, user["id"], ctx.params["folder"])
            folders = [fid]
        else:
            folders = list(mb.folders)
        streams = [ctx.state.mail_stream_key(user["id"], f) for f in folders]

        def render(key: tuple[str, ...], item_id: str, select: list[str] | None):
            msg = mb.messages.get(item_id)
            if msg is None or msg["parentFolderId"] != key[2]:
                return None
            return {"@odata.type": "#microsoft.graph.message", **render_message(msg, select)}

        return delta_response(
            ctx,
            scope={"kind": "mail", "user_id": user["id"], "folders": folders},
            streams=streams,
            render=render,
            context="Collection(message)",
            removed_type="#microsoft.graph.message",
        )


# --------------------------------------------------------------------------- sending


def _recipients(raw: Any, field_name: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise GraphError(
            400,
            "ErrorInvalidRecipients",
            f"At least one recipient isn't valid., {field_name} must be a list.",
        )
    out = []
    for r in raw:
        addr = ((r or {}).get("emailAddress") or {}).get("address") if isinstance(r, dict) else None
        if not addr or "@" not in addr:
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                "At least one recipient isn't valid., A message can't be sent "
                "because it contains no recipients.",
            )
        out.append(
            {"emailAddress": {"name": r["emailAddress"].get("name") or addr, "address": addr}}
        )
    return out


def _headers(raw: Any) -> list[dict[str, str]]:
    if not raw:
        return []
    out = []
    for h in raw:
        name = str((h or {}).get("name") or "")
        if not name.lower().startswith("x-"):
            raise GraphError(
                400,
                "InvalidInternetMessageHeader",
                f"The internet message header name '{name}' should start with 'x-' or 'X-'.",
            )
        out.append({"name": name, "value": str(h.get("value") or "")})
    return out


def _ext_props(raw: Any) -> list[dict[str, str]]:
    if not raw:
        return []
    out = []
    for p in raw:
        if not isinstance(p, dict) or not p.get("id"):
            raise GraphError(
                400,
                "ErrorInvalidExtendedPropertyValue",
                "Extended property must have an id and a value.",
            )
        out.append({"id": str(p["id"]), "value": str(p.get("value") or "")})
    return out


def _message_from_json(
    ctx: Ctx, sender: dict[str, Any], m: dict[str, Any], draft: bool
) -> dict[str, Any]:
    body = m.get("body") or {"contentType": "text", "content": ""}
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "Invalid message body.")
    return build_message(
        sender=sender,
        to=_recipients(m.get("toRecipients"), "toRecipients"),
        cc=_recipients(m.get("ccRecipients"), "ccRecipients"),
        bcc=_recipients(m.get("bccRecipients"), "bccRecipients"),
        subject=str(m.get("subject") or ""),
        body={
            "contentType": "html"
            if str(body.get("contentType") or "").lower() == "html"
            else "text",
            "content": str(body.get("content") or ""),
        },
        when=ctx.state.clock.now(),
        is_read=True,
        is_draft=draft,
        headers=_headers(m.get("internetMessageHeaders")),
        ext_props=_ext_props(m.get("singleValueExtendedProperties")),
        importance=str(m.get("importance") or "normal").lower(),
        domain=ctx.state.domain,
    )


def _mime_message(ctx: Ctx, sender: dict[str, Any]) -> dict[str, Any]:
    try:
        raw = base64.b64decode(ctx.req.body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GraphError(
            400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."
        ) from exc
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    to = [
        {"emailAddress": {"address": a.addr_spec, "name": a.display_name or a.addr_spec}}
        for a in getattr(parsed.get("To"), "addresses", ())
    ]
    part = parsed.get_body(("plain", "html"))
    content = part.get_content() if part is not None else ""
    ctype = "html" if part is not None and part.get_content_subtype() == "html" else "text"
    headers = [
        {"name": k, "value": str(v)} for k, v in parsed.items() if k.lower().startswith("x-")
    ]
    return build_message(
        sender=sender,
        to=to,
        subject=str(parsed.get("Subject") or ""),
        body={"contentType": ctype, "content": content},
        when=ctx.state.clock.now(),
        is_read=True,
        headers=headers,
        domain=ctx.state.domain,
    )


def _deliver(
    st: EmulatorState,
    sender: dict[str, Any],
    msg: dict[str, Any],
    save: bool,
    via: str,
    principal: Principal,
) -> dict[str, Any] | None:
    """Deliver ``msg`` to tenant recipients; optionally keep a Sent Items copy."""
    now = st.clock.now()
    msg["isDraft"] = False
    msg["sentDateTime"] = msg["receivedDateTime"] = msg["lastModifiedDateTime"] = now.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    sent_copy = None
    if save:
        sent_copy = st.put_message(
            sender["id"], st.mailboxes[sender["id"]].wellknown["sentitems"], msg
        )
    delivered = []
    for r in msg["toRecipients"] + msg["ccRecipients"] + msg["bccRecipients"]:
        rcpt = st.resolve_user(r["emailAddress"]["address"])
        if rcpt is None:
            continue
        inbound = copy_for_recipient(msg, now)
        st.put_message(rcpt["id"], st.mailboxes[rcpt["id"]].wellknown["inbox"], inbound)
        delivered.append(rcpt["userPrincipalName"])
    st.record_sent(
        {
            "kind": "mail",
            "via": via,
            "app_id": principal.app_id,
            "delegated": principal.delegated,
            "sender": sender["userPrincipalName"],
            "to": [r["emailAddress"]["address"] for r in msg["toRecipients"]],
            "cc": [r["emailAddress"]["address"] for r in msg["ccRecipients"]],
            "bcc": [r["emailAddress"]["address"] for r in msg["bccRecipients"]],
            "subject": msg["subject"],
            "body": msg["body"],
            "internetMessageId": msg["internetMessageId"],
            "internetMessageHeaders": msg.get("internetMessageHeaders") or [],
            "singleValueExtendedProperties": msg.get("singleValueExtendedProperties") or [],
            "sent_item_id": sent_copy["id"] if sent_copy else None,
            "delivered_to": delivered,
        }
    )
    return sent_copy


def send_mail(ctx: Ctx) -> Response:
    ctype = (ctx.req.headers.get("Content-Type") or "").lower()
    with ctx.state.lock:
        sender = mailbox_user(ctx, send=True)
        if ctype.startswith("text/plain"):
            msg = _mime_message(ctx, sender)
            save = True
        else:
            body = ctx.body_json()
            m = body.get("message")
            if not isinstance(m, dict):
                raise GraphError(
                    400, "ErrorInvalidRequest", "The message parameter is missing or invalid."
                )
            msg = _message_from_json(ctx, sender, m, draft=False)
            save = body.get("saveToSentItems", True) not in (False, "false", "False")
        if not (msg["toRecipients"] or msg["ccRecipients"] or msg["bccRecipients"]):
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                "At least one recipient isn't valid., A message can't be sent "
                "because it contains no recipients.",
            )
        _deliver(ctx.state, sender, msg, save, "sendMail", ctx.principal)
    return empty_response(202)


def create_draft(ctx: Ctx) -> Response:
    body = ctx.body_json()
    with ctx.state.lock:
        user = mailbox_user(ctx, write=True)
        mb = ctx.state.mailboxes[user["id"]]
        folder = (
            folder_or_404(ctx, user["id"], ctx.params["folder"])
            if "folder" in ctx.params
            else mb.wellknown["drafts"]
        )
        msg = _message_from_json(ctx, user, body, draft=True)
        msg["sentDateTime"] = None
        ctx.state.put_message(user["id"], folder, msg)
        out = render_message(msg, None)
        location = f"{ctx.app.graph_url}/users/{user['id']}/messages/{msg['id']}"
    return entity(
        ctx,
        f"users('{user['id']}')/messages/$entity",
        out,
        status=201,
        headers={"Location": location},
    )


def send_draft(ctx: Ctx) -> Response:
    """Accept the send (202) and put the draft in the outbox: it reaches Sent Items after
    ``mail.send_delay_s`` (Learn, "Obtain immutable identifiers for Outlook resources": the
    Sent Items copy "isn't created until the message is sent successfully, which may take
    time"). The copy keeps the draft's id only when the client asked for immutable ids;
    otherwise it gets a new one, as an item moved to another folder does."""
    immutable = prefers_immutable_id(ctx.req.headers.get("Prefer"))
    delay = float(ctx.app.config.get("mail", "send_delay_s"))
    with ctx.state.lock:
        user = mailbox_user(ctx, send=True)
        msg = message_or_404(ctx, user["id"], ctx.params["message"])
        if not msg.get("isDraft"):
            raise GraphError(
                400, "ErrorInvalidOperation", "The item is not a draft and cannot be sent."
            )
        if not (msg["toRecipients"] or msg["ccRecipients"] or msg["bccRecipients"]):
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                "At least one recipient isn't valid., A message can't be sent "
                "because it contains no recipients.",
            )
        ctx.state.outbox.append(
            {
                "due": time.monotonic() + max(0.0, delay),
                "user_id": user["id"],
                "message": copy.deepcopy(msg),
                "immutable": immutable,
                "principal": ctx.principal,
            }
        )
        if delay <= 0:
            settle_outbox(ctx.state)
    headers = {"Preference-Applied": 'IdType="ImmutableId"'} if immutable else {}
    return empty_response(202, headers)


def settle_outbox(st: EmulatorState) -> int:
    """Send the outbox entries that are due (call with ``st.lock`` held); returns how many."""
    if not st.outbox:
        return 0
    now = time.monotonic()
    due = [e for e in st.outbox if e["due"] <= now]
    if not due:
        return 0
    st.outbox = [e for e in st.outbox if e["due"] > now]
    for entry in due:
        user = st.users.get(entry["user_id"])
        if user is None:
            continue
        draft = entry["message"]
        mb = st.mailboxes[user["id"]]
        current = mb.messages.get(draft["id"])
        if current is not None and current.get("isDraft"):
            st.delete_message(user["id"], draft["id"], hard=True)
        sent = copy_for_recipient(draft, st.clock.now())
        if entry["immutable"] and draft["id"] not in mb.messages:
            sent["id"] = draft["id"]
        sent["isRead"] = True
        sent["internetMessageId"] = draft["internetMessageId"]
        sent["bccRecipients"] = list(draft.get("bccRecipients") or [])
        _deliver(st, user, sent, True, "draft.send", entry["principal"])
    return len(due)


def register(router: Router) -> None:
    u = "users/{user}"
    router.add("GET", "users", list_users)
    router.add("GET", u, get_user)
    router.add("GET", f"{u}/mailFolders", list_folders, mailbox_param="user")
    router.add("GET", f"{u}/mailFolders/{{folder}}", get_folder, mailbox_param="user")
    router.add(
        "GET", f"{u}/mailFolders/{{folder}}/messages/delta", messages_delta, mailbox_param="user"
    )
    router.add("GET", f"{u}/messages/delta", messages_delta, mailbox_param="user")
    router.add("GET", f"{u}/mailFolders/{{folder}}/messages", list_messages, mailbox_param="user")
    router.add("POST", f"{u}/mailFolders/{{folder}}/messages", create_draft, mailbox_param="user")
    router.add(
        "GET", f"{u}/mailFolders/{{folder}}/messages/{{message}}", get_message, mailbox_param="user"
    )
    router.add("GET", f"{u}/messages", list_messages, mailbox_param="user")
    router.add("POST", f"{u}/messages", create_draft, mailbox_param="user")
    router.add("GET", f"{u}/messages/{{message}}", get_message, mailbox_param="user")
    router.add("PATCH", f"{u}/messages/{{message}}", update_message, mailbox_param="user")
    router.add("DELETE", f"{u}/messages/{{message}}", delete_message, mailbox_param="user")
    router.add("POST", f"{u}/messages/{{message}}/send", send_draft, mailbox_param="user")
    router.add("POST", f"{u}/messages/{{message}}/move", move_message, mailbox_param="user")
    router.add("POST", f"{u}/sendMail", send_mail, mailbox_param="user")


__all__ = ["email_address", "register"]
