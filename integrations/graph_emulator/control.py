"""Control API under ``/_emulator/`` (loopback peers with the control bearer token only).

See README.md for the table of endpoints.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import uuid
from datetime import timedelta
from typing import Any

from . import assertions, sign_in
from .config import ConfigError
from .faults import parse_rule
from .host import EmulatorHost
from .httptypes import Request, Response, json_response, parse_iso
from .messages import build_message, email_address
from .state import DEFAULT_FEDERATED_AUDIENCE, App, FederatedCredential, Secret
from .traffic import TrafficBurst

log = logging.getLogger("graph_emulator.control")

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _err(status: int, message: str) -> Response:
    return json_response(status, {"error": message}, content_type="application/json")


def _ok(obj: Any, status: int = 200) -> Response:
    return json_response(status, obj, content_type="application/json")


def _body(req: Request) -> dict[str, Any]:
    try:
        data = req.json()
    except ValueError as exc:
        raise ControlError(400, "body must be JSON") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ControlError(400, "body must be a JSON object")
    return data


def handle(app: EmulatorHost, req: Request) -> Response:
    if req.peer not in LOOPBACK:
        return _err(403, "control API is only available from loopback addresses")
    auth = req.headers.get("Authorization") or ""
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if not token or not secrets.compare_digest(token, app.control_token):
        return _err(401, "missing or invalid control token")
    segs = req.segments[1:]
    try:
        return _route(app, req, segs)
    except ControlError as exc:
        return _err(exc.status, exc.message)
    except (ConfigError, ValueError, KeyError, TypeError) as exc:
        return _err(400, f"{type(exc).__name__}: {exc}")


def _user(app: EmulatorHost, ident: str) -> dict[str, Any]:
    user = app.state.resolve_user(ident)
    if user is None:
        raise ControlError(404, f"unknown user {ident!r}")
    return user


def _app(app: EmulatorHost, client_id: str) -> App:
    a = app.state.apps.get(client_id)
    if a is None:
        raise ControlError(404, f"unknown app {client_id!r}")
    return a


# --------------------------------------------------------------------------- traffic helpers


def create_mail(app: EmulatorHost, spec: dict[str, Any]) -> dict[str, Any]:
    """Deliver a message into a mailbox (as if it arrived from outside or a colleague)."""
    st = app.state
    with st.lock:
        rcpt = _user(app, str(spec["to"]))
        sender_spec = spec.get("from")
        sender_user = st.resolve_user(str(sender_spec)) if sender_spec else None
        if sender_user is not None:
            sender = sender_user
        else:
            addr = str(sender_spec or f"dispatch-notifications@{st.domain}")
            sender = {"displayName": spec.get("from_name") or addr.split("@")[0], "mail": addr}
        folder = st.resolve_folder(rcpt["id"], str(spec.get("folder") or "inbox"))
        if folder is None:
            raise ControlError(404, "unknown folder")
        body = spec.get("body") or ""
        body_obj = (
            body
            if isinstance(body, dict)
            else {"contentType": spec.get("content_type") or "text", "content": str(body)}
        )
        msg = build_message(
            sender=sender,
            to=[email_address(rcpt)],
            subject=str(spec.get("subject") or "(no subject)"),
            body=body_obj,
            when=st.clock.now(),
            is_read=bool(spec.get("is_read", False)),
            headers=spec.get("internetMessageHeaders"),
            domain=st.domain,
        )
        st.put_message(rcpt["id"], folder, msg)
        return {
            "id": msg["id"],
            "user_id": rcpt["id"],
            "folder_id": folder,
            "internetMessageId": msg["internetMessageId"],
        }


def create_chat_message(app: EmulatorHost, spec: dict[str, Any]) -> dict[str, Any]:
    st = app.state
    with st.lock:
        content = str(spec.get("body") or spec.get("content") or "")
        ctype = str(spec.get("content_type") or "text")
        if spec.get("team_id"):
            team = st.teams.get(str(spec["team_id"]))
            if team is None or str(spec.get("channel_id")) not in team.channels:
                raise ControlError(404, "unknown team/channel")
            sender = _user(app, str(spec.get("from") or st.users[team.members[0]]["id"]))
            msg = st.chat_message(
                sender["id"],
                content,
                ctype,
                team_id=team.data["id"],
                channel_id=str(spec["channel_id"]),
            )
            st.post_channel_message(team.data["id"], str(spec["channel_id"]), msg)
            return {"id": msg["id"], "team_id": team.data["id"], "channel_id": spec["channel_id"]}
        chat_id = spec.get("chat_id")
        if chat_id is None:
            a = _user(app, str(spec["from"]))
            b = _user(app, str(spec["to"]))
            chat_id = next(
                (
                    c.data["id"]
                    for c in st.chats_of(a["id"])
                    if c.data["chatType"] == "oneOnOne" and set(c.members) == {a["id"], b["id"]}
                ),
                None,
            )
            if chat_id is None:
                raise ControlError(404, "no 1:1 chat between those users")
        chat = st.chats.get(str(chat_id))
        if chat is None:
            raise ControlError(404, f"unknown chat {chat_id!r}")
        sender = _user(app, str(spec.get("from") or chat.members[0]))
        if sender["id"] not in chat.members:
            raise ControlError(400, "sender is not a member of the chat")
        msg = st.chat_message(sender["id"], content, ctype, chat_id=chat.data["id"])
        st.post_chat_message(chat.data["id"], msg)
        return {"id": msg["id"], "chat_id": chat.data["id"]}


def _start_traffic(app: EmulatorHost, spec: dict[str, Any]) -> dict[str, Any]:
    st = app.state
    if st.traffic is not None and st.traffic.is_alive():
        raise ControlError(409, "a traffic burst is running")
    with st.lock:
        users = [_user(app, str(u))["id"] for u in spec.get("users") or []]
    if not users:
        raise ControlError(400, "users: a non-empty list of user ids or UPNs")
    rate, seconds = float(spec.get("rate") or 0), float(spec.get("seconds") or 0)
    if not (0 < rate <= 20_000 and 0 < seconds <= 3600):
        raise ControlError(400, "rate (per second, at most 20,000) and seconds (at most 3,600)")
    st.traffic = TrafficBurst(
        st, users, rate=rate, seconds=seconds, mail_share=float(spec.get("mail_share", 0.6))
    )
    st.traffic.start()
    return {"started": True, "planned": int(rate * seconds)}


# --------------------------------------------------------------------------- routing


def _route(app: EmulatorHost, req: Request, segs: list[str]) -> Response:  # noqa: C901 (the control API's route table, one branch per endpoint)
    m = req.method
    st = app.state
    q = req.query
    path = "/".join(segs)

    if path in ("", "health") and m == "GET":
        return _ok({"status": "ok", "base_url": app.base_url, "stats": _stats(app)})
    if path == "tenant" and m == "GET":
        with st.lock:
            info = app.tenant_info()
            info.update(
                {
                    "users": [
                        {
                            "id": u["id"],
                            "userPrincipalName": u["userPrincipalName"],
                            "displayName": u["displayName"],
                            "jobTitle": u["jobTitle"],
                        }
                        for u in st.users.values()
                    ],
                    "chats": [
                        {
                            "id": c.data["id"],
                            "chatType": c.data["chatType"],
                            "topic": c.data["topic"],
                            "members": list(c.members),
                        }
                        for c in st.chats.values()
                    ],
                    "teams": [
                        {
                            "id": t.data["id"],
                            "displayName": t.data["displayName"],
                            "channels": [
                                {"id": ch.data["id"], "displayName": ch.data["displayName"]}
                                for ch in t.channels.values()
                            ],
                        }
                        for t in st.teams.values()
                    ],
                }
            )
        return _ok(info)

    # ---------------------------------------------------------------- faults
    if path == "faults":
        if m == "POST":
            body = _body(req)
            faults = body.get("faults")
            specs = faults if isinstance(faults, list) else [body]
            rules = [app.faults.add(parse_rule(s)) for s in specs]
            return _ok({"faults": [r.public() for r in rules]}, 201)
        if m == "GET":
            return _ok({"faults": app.faults.list()})
        if m == "DELETE":
            app.faults.clear()
            return _ok({"cleared": True})
    if len(segs) == 2 and segs[0] == "faults" and m == "DELETE":
        return _ok({"removed": app.faults.remove(segs[1])})

    # ---------------------------------------------------------------- logs
    if path == "requests" and m == "GET":
        entries = app.requests_since(int(q.get("since") or 0))
        if q.get("path"):
            rx = re.compile(q["path"])
            entries = [e for e in entries if rx.search(e["path"])]
        if q.get("method"):
            entries = [e for e in entries if e["method"] == q["method"].upper()]
        return _ok({"value": entries, "last_seq": app.log_seq})
    if path == "sent" and m == "GET":
        since = int(q.get("since") or 0)
        with st.lock:
            entries = [e for e in st.sent_log if e["seq"] > since]
        if q.get("kind"):
            entries = [e for e in entries if e["kind"] == q["kind"]]
        return _ok({"value": entries})
    if path == "deliveries" and m == "GET":
        return _ok(
            {
                "value": app.delivery.deliveries(int(q.get("since") or 0)),
                "pending": app.delivery.pending_count(),
                "endpoints": app.delivery.endpoint_states(),
            }
        )

    # ---------------------------------------------------------------- state
    if path == "reset" and m == "POST":
        app.reset()
        return _ok({"reset": True})
    if path == "snapshot" and m in ("GET", "POST"):
        snap = snapshot(app)
        if m == "POST":
            target = app.state_dir / "state-snapshot.json"
            target.write_text(json.dumps(snap, indent=1))
            return _ok({"path": str(target.resolve())})
        return _ok(snap)
    if path == "config":
        if m == "GET":
            return _ok(app.config.snapshot())
        if m in ("POST", "PATCH"):
            app.config.update(_body(req))
            app.apply_limits()
            return _ok(app.config.snapshot())
    if path == "clock":
        if m == "POST":
            body = _body(req)
            if "offset_seconds" in body:
                app.clock.set_offset(float(body["offset_seconds"]))
            else:
                app.clock.advance(float(body.get("advance_seconds", 0)))
        return _ok({"now": app.clock.now().isoformat(), "offset_seconds": app.clock.offset})
    if path == "service-account" and m == "POST":
        with st.lock:
            user = _user(app, str(_body(req)["upn"]))
            st.service_account_upn = user["userPrincipalName"]
        return _ok({"service_account_upn": user["userPrincipalName"]})

    # ---------------------------------------------------------------- traffic
    if path == "mail" and m == "POST":
        return _ok(create_mail(app, _body(req)), 201)
    if path == "traffic" and m == "POST":
        return _ok(_start_traffic(app, _body(req)), 201)
    if path == "traffic" and m == "GET":
        if st.traffic is None:
            raise ControlError(404, "no traffic burst was started")
        return _ok(st.traffic.progress(int(q.get("since") or 0)))
    if path == "traffic" and m == "DELETE":
        if st.traffic is not None:
            st.traffic.stopping.set()
        return _ok({"stopped": st.traffic is not None})
    if path == "mail/update" and m == "POST":
        body = _body(req)
        with st.lock:
            user = _user(app, str(body["user"]))
            if body["message_id"] not in st.mailboxes[user["id"]].messages:
                raise ControlError(404, "unknown message")
            st.update_message(user["id"], body["message_id"], dict(body.get("changes") or {}))
        return _ok({"updated": True})
    if path == "mail/delete" and m == "POST":
        body = _body(req)
        with st.lock:
            user = _user(app, str(body["user"]))
            if body["message_id"] not in st.mailboxes[user["id"]].messages:
                raise ControlError(404, "unknown message")
            st.delete_message(user["id"], body["message_id"], hard=bool(body.get("hard")))
        return _ok({"deleted": True})
    if path == "chat-message" and m == "POST":
        return _ok(create_chat_message(app, _body(req)), 201)
    if path == "chat-message/delete" and m == "POST":
        body = _body(req)
        with st.lock:
            chat = st.chats.get(str(body.get("chat_id")))
            if chat is None or str(body.get("message_id")) not in chat.messages:
                raise ControlError(404, "unknown chat or message")
            msg = st.soft_delete_chat_message(chat.data["id"], str(body["message_id"]))
        return _ok({"id": msg["id"], "deletedDateTime": msg["deletedDateTime"]})
    if path == "delta/expire" and m == "POST":
        body = _body(req)
        with st.lock:
            uid = _user(app, str(body["user"]))["id"] if body.get("user") else None
            n = st.expire_cursors(uid)
        return _ok({"expired": n})

    # ---------------------------------------------------------------- subscriptions
    if path == "subscriptions" and m == "GET":
        with st.lock:
            return _ok(
                {
                    "value": [
                        dict(s.to_json(), spec=s.spec.__dict__) for s in st.subscriptions.values()
                    ]
                }
            )
    if len(segs) == 3 and segs[0] == "subscriptions" and segs[2] == "remove" and m == "POST":
        with st.lock:
            sub = st.subscriptions.pop(segs[1], None)
            if sub is None:
                raise ControlError(404, "unknown subscription")
            # {"notify": false}: gone without a lifecycle event, as Graph sometimes does.
            notify = _body(req).get("notify", True) is not False
            sent = app.delivery.enqueue_lifecycle(sub, "subscriptionRemoved") if notify else False
        return _ok({"removed": True, "lifecycle_notification_queued": sent})
    if path == "lifecycle" and m == "POST":
        body = _body(req)
        event = str(body.get("event") or "reauthorizationRequired")
        if event not in ("reauthorizationRequired", "subscriptionRemoved", "missed"):
            raise ControlError(400, f"unknown lifecycle event {event!r}")
        with st.lock:
            sub = st.subscriptions.get(str(body.get("subscription_id")))
            if sub is None:
                raise ControlError(404, "unknown subscription")
            if event == "subscriptionRemoved":
                st.subscriptions.pop(sub.id, None)
            sent = app.delivery.enqueue_lifecycle(sub, event)
        return _ok({"queued": sent})

    # ---------------------------------------------------------------- apps / secrets
    if path == "apps":
        if m == "GET":
            with st.lock:
                return _ok({"value": [a.public() for a in st.apps.values()]})
        if m == "POST":
            body = _body(req)
            with st.lock:
                a = App(
                    client_id=str(body.get("client_id") or uuid.uuid4()),
                    display_name=str(body.get("display_name") or "Test app"),
                    sp_id=str(uuid.uuid4()),
                )
                if "roles" in body:
                    a.roles = set(body["roles"])
                secret = Secret(str(uuid.uuid4()), secrets.token_urlsafe(30), start=app.clock.now())
                a.secrets.append(secret)
                st.apps[a.client_id] = a
            return _ok({**a.public(), "client_secret": secret.value}, 201)
    if len(segs) >= 3 and segs[0] == "apps":
        with st.lock:
            a = _app(app, segs[1])
            rest = segs[2:]
            if rest == ["roles"] and m in ("PUT", "POST"):
                a.roles = set(_body(req)["roles"])
                return _ok(a.public())
            if rest == ["delegated-scopes"] and m in ("PUT", "POST"):
                a.delegated_scopes = set(_body(req)["scopes"])
                return _ok(a.public())
            if rest == ["protected-api"] and m in ("PUT", "POST"):
                a.protected_api = bool(_body(req)["approved"])
                return _ok(a.public())
            if rest == ["redirect-uris"] and m in ("PUT", "POST"):
                a.redirect_uris = list(_body(req)["redirect_uris"])
                return _ok(a.public())
            if rest == ["secrets"] and m == "GET":
                return _ok({"value": [s.public() for s in a.secrets]})
            if rest == ["secrets"] and m == "POST":
                body = _body(req)
                now = app.clock.now()
                end = None
                if body.get("expires_at"):
                    end = parse_iso(str(body["expires_at"]))
                elif body.get("expires_in_seconds") is not None:
                    end = now + timedelta(seconds=float(body["expires_in_seconds"]))
                secret = Secret(
                    str(uuid.uuid4()),
                    str(body.get("value") or secrets.token_urlsafe(30)),
                    display_name=str(body.get("display_name") or "rotated"),
                    start=now,
                    end=end,
                )
                a.secrets.append(secret)
                return _ok({**secret.public(), "secretText": secret.value}, 201)
            if rest == ["certificates"] and m == "GET":
                return _ok({"value": [c.public() for c in a.certificates]})
            if rest == ["certificates"] and m == "POST":
                body = _body(req)
                try:
                    certificate = assertions.load_certificate(
                        str(body.get("certificate") or ""),
                        str(body.get("display_name") or "certificate"),
                    )
                except ValueError:
                    raise ControlError(
                        400, "'certificate' must be a PEM certificate (-----BEGIN CERTIFICATE-----)"
                    ) from None
                a.certificates = [
                    c for c in a.certificates if c.thumbprint != certificate.thumbprint
                ] + [certificate]
                return _ok(certificate.public(), 201)
            if len(rest) == 2 and rest[0] == "certificates" and m == "DELETE":
                kept = [c for c in a.certificates if c.thumbprint != rest[1].upper()]
                if len(kept) == len(a.certificates):
                    raise ControlError(404, "unknown certificate thumbprint")
                a.certificates = kept
                return _ok({"removed": True})
            if rest == ["federated-credentials"] and m == "GET":
                return _ok({"value": [f.public() for f in a.federated_credentials]})
            if rest == ["federated-credentials"] and m == "POST":
                body = _body(req)
                issuer, subject = str(body.get("issuer") or ""), str(body.get("subject") or "")
                jwks, jwks_uri = body.get("jwks"), str(body.get("jwksUri") or "")
                if not issuer or not subject:
                    raise ControlError(400, "'issuer' and 'subject' are required")
                if (jwks is None) == (not jwks_uri) or (
                    jwks is not None and not isinstance(jwks, dict)
                ):
                    raise ControlError(
                        400, "give the issuer's keys as 'jwks' (object) or 'jwksUri'"
                    )
                record = FederatedCredential(
                    id=str(uuid.uuid4()),
                    name=str(body.get("name") or "workload"),
                    issuer=issuer,
                    subject=subject,
                    audiences=[str(x) for x in body.get("audiences") or []]
                    or [DEFAULT_FEDERATED_AUDIENCE],
                    jwks=jwks,
                    jwks_uri=jwks_uri,
                )
                a.federated_credentials.append(record)
                return _ok(record.public(), 201)
            if len(rest) == 2 and rest[0] == "federated-credentials" and m == "DELETE":
                kept_fc = [f for f in a.federated_credentials if f.id != rest[1]]
                if len(kept_fc) == len(a.federated_credentials):
                    raise ControlError(404, "unknown federated credential")
                a.federated_credentials = kept_fc
                return _ok({"removed": True})
            if len(rest) >= 2 and rest[0] == "secrets":
                named = next((s for s in a.secrets if s.key_id == rest[1]), None)
                if named is None:
                    raise ControlError(404, "unknown secret")
                if len(rest) == 2 and m == "DELETE":
                    a.secrets.remove(named)
                    return _ok({"removed": True})
                if rest[2:] == ["expire"] and m == "POST":
                    named.expired = True
                    return _ok(named.public())
    if path == "workload-identity/token" and m == "POST":
        # The emulator as the workload's OIDC issuer (a cluster projecting a token).
        body = _body(req)
        identity = app.identity
        token = identity.workload_token(
            str(body.get("subject") or "system:serviceaccount:fleet:fleet-portal"),
            str(body.get("audience") or DEFAULT_FEDERATED_AUDIENCE),
            int(body.get("lifetime_seconds") or 3600),
        )
        return _ok(
            {"token": token, "issuer": identity.workload_issuer(), "jwksUri": identity.jwks_uri()}
        )
    try:
        answer = sign_in.control(st, m, segs, _body(req) if m in ("PUT", "POST") else {})
    except LookupError as exc:
        raise ControlError(404, str(exc)) from None
    if answer is not None:
        return _ok(answer)
    return _err(404, f"no control route for {m} /_emulator/{path}")


def _stats(app: EmulatorHost) -> dict[str, Any]:
    with app.state.lock:
        stats = app.state.stats()
    stats["pending_notifications"] = app.delivery.pending_count()
    return stats


def snapshot(app: EmulatorHost) -> dict[str, Any]:
    st = app.state
    with st.lock:
        return {
            "tenant_id": st.tenant_id,
            "domain": st.domain,
            "clock": app.clock.now().isoformat(),
            "users": list(st.users.values()),
            "mailboxes": {
                uid: {"folders": list(mb.folders.values()), "messages": list(mb.messages.values())}
                for uid, mb in st.mailboxes.items()
            },
            "chats": [
                {"chat": c.data, "members": c.members, "messages": list(c.messages.values())}
                for c in st.chats.values()
            ],
            "teams": [
                {
                    "team": t.data,
                    "members": t.members,
                    "channels": [
                        {"channel": ch.data, "messages": list(ch.messages.values())}
                        for ch in t.channels.values()
                    ],
                }
                for t in st.teams.values()
            ],
            "subscriptions": [s.to_json() for s in st.subscriptions.values()],
            "apps": [a.public() for a in st.apps.values()],
            "sent": list(st.sent_log),
        }
