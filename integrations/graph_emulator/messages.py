"""Outlook message objects (Graph ``message`` resource shape) and rendering."""

from __future__ import annotations

import base64
import html
import re
import secrets
from datetime import datetime
from typing import Any

from .httptypes import iso
from .odata import apply_select, compile_filter, get_ci
from .state import exchange_id

HIDDEN_BY_DEFAULT = (
    "internetMessageHeaders",
    "uniqueBody",
    "singleValueExtendedProperties",
    "multiValueExtendedProperties",
)


def email_address(user_or_addr: dict[str, Any] | str, name: str | None = None) -> dict:
    if isinstance(user_or_addr, dict):
        return {
            "emailAddress": {"name": user_or_addr["displayName"], "address": user_or_addr["mail"]}
        }
    return {"emailAddress": {"name": name or user_or_addr, "address": user_or_addr}}


def _preview(body: dict[str, Any]) -> str:
    text = body.get("content") or ""
    if (body.get("contentType") or "text").lower() == "html":
        text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return " ".join(text.split())[:255]


def build_message(
    *,
    sender: dict[str, Any],
    to: list[dict[str, Any]],
    subject: str,
    body: dict[str, Any],
    when: datetime,
    is_read: bool = False,
    is_draft: bool = False,
    cc: list[dict[str, Any]] | None = None,
    bcc: list[dict[str, Any]] | None = None,
    headers: list[dict[str, str]] | None = None,
    ext_props: list[dict[str, str]] | None = None,
    internet_message_id: str | None = None,
    conversation_id: str | None = None,
    importance: str = "normal",
    domain: str = "fleetdemo.onmicrosoft.com",
    msg_id: str | None = None,
) -> dict[str, Any]:
    change_key = exchange_id("CQAAABYAAA", secrets.token_bytes(12))
    stamp = iso(when, ms=False)
    mid = msg_id or exchange_id()
    return {
        "@odata.etag": f'W/"{change_key}"',
        "id": mid,
        "createdDateTime": stamp,
        "lastModifiedDateTime": stamp,
        "changeKey": change_key,
        "categories": [],
        "receivedDateTime": stamp,
        "sentDateTime": None if is_draft else stamp,
        "hasAttachments": False,
        "internetMessageId": internet_message_id
        or f"<{secrets.token_hex(12).upper()}@{domain.upper()}>",
        "subject": subject,
        "bodyPreview": _preview(body),
        "importance": importance,
        "parentFolderId": None,
        "conversationId": conversation_id or exchange_id("AAQkAG", secrets.token_bytes(24)),
        # Edm.Binary: standard base64 (the SDKs decode it to bytes); 22 bytes as in Outlook
        # (reserved byte, FILETIME part, GUID).
        "conversationIndex": base64.b64encode(b"\x01" + secrets.token_bytes(21)).decode(),
        "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False,
        "isRead": is_read,
        "isDraft": is_draft,
        "webLink": f"https://outlook.office365.com/owa/?ItemID={mid}&exvsurl=1&viewmodel=ReadMessageItem",
        "inferenceClassification": "focused",
        "body": dict(body),
        "sender": email_address(sender),
        "from": email_address(sender),
        "toRecipients": list(to),
        "ccRecipients": list(cc or []),
        "bccRecipients": list(bcc or []),
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
        "internetMessageHeaders": list(headers or []),
        "singleValueExtendedProperties": list(ext_props or []),
    }


def copy_for_recipient(msg: dict[str, Any], when: datetime) -> dict[str, Any]:
    out = {
        k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
        for k, v in msg.items()
    }
    change_key = exchange_id("CQAAABYAAA", secrets.token_bytes(12))
    out.update(
        {
            "id": exchange_id(),
            "changeKey": change_key,
            "@odata.etag": f'W/"{change_key}"',
            "isDraft": False,
            "isRead": False,
            "receivedDateTime": iso(when, ms=False),
            "sentDateTime": iso(when, ms=False),
            "createdDateTime": iso(when, ms=False),
            "lastModifiedDateTime": iso(when, ms=False),
            "bccRecipients": [],
        }
    )
    return out


def _expand_ext(msg: dict[str, Any], expand: str | None) -> list[dict[str, Any]] | None:
    if not expand:
        return None
    m = re.search(r"singleValueExtendedProperties(?:\((.*)\))?", expand, re.IGNORECASE)
    if not m:
        return None
    props = msg.get("singleValueExtendedProperties") or []
    inner = m.group(1)
    if inner:
        # $filter=id eq '...'
        fm = re.match(r"\s*\$filter\s*=\s*(.*)$", inner, re.IGNORECASE)
        if fm:
            pred = compile_filter(fm.group(1))
            props = [p for p in props if pred(p)]
    return [dict(p) for p in props]


def render_message(
    msg: dict[str, Any], select: list[str] | None, expand: str | None = None
) -> dict[str, Any]:
    out = {k: v for k, v in msg.items() if k not in HIDDEN_BY_DEFAULT}
    if select:
        wanted = {s.lower() for s in select}
        for k in HIDDEN_BY_DEFAULT:
            if k.lower() in wanted and k in msg:
                out[k] = msg[k]
        out = apply_select(out, select)
    ext = _expand_ext(msg, expand)
    if ext is not None:
        out["singleValueExtendedProperties"] = ext
    return out


def message_sort_key(msg: dict[str, Any]) -> str:
    return get_ci(msg, "receivedDateTime") or ""
