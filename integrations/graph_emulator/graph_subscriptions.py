"""Graph routes: ``/subscriptions`` (create with validation handshake, get, list,
renew, reauthorize, delete) following Microsoft Learn's "Create subscription", "Update
subscription" and
"Receive change notifications through webhooks"."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests

from . import outbound
from .graph_common import (
    Ctx,
    Router,
    collection,
    entity,
    normalize_segments,
    raise_if_throttled,
    require_protected_api,
)
from .httptypes import GraphError, Response, empty_response, parse_iso
from .state import ResourceSpec, Subscription

log = logging.getLogger("graph_emulator.subscriptions")

VALID_CHANGE_TYPES = {"created", "updated", "deleted"}
TLS_VERSIONS = {"v1_0", "v1_1", "v1_2", "v1_3"}


def _bad(message: str, code: str = "InvalidRequest") -> GraphError:
    return GraphError(400, code, message)


def _ext(status: int, reason: str, op: str = "Create") -> GraphError:
    names = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict"}
    return GraphError(
        status,
        "ExtensionError",
        f"Operation: {op}; Exception: [Status Code: {names.get(status, status)}; Reason: {reason}]",
    )


def parse_resource(ctx: Ctx, resource: str) -> ResourceSpec:  # noqa: C901 (one branch per resource path Graph accepts)
    """Resolve a subscription ``resource`` string. Caller holds the state lock."""
    st = ctx.state
    path = resource.split("?", 1)[0].strip()
    for prefix in ("https://graph.microsoft.com/v1.0/", ctx.app.graph_url + "/"):
        if path.lower().startswith(prefix.lower()):
            path = path[len(prefix) :]
    segs = normalize_segments([s for s in path.split("/") if s])
    low = [s.lower() for s in segs]
    p = ctx.principal
    if low and low[0] == "me":
        if not p.delegated:
            raise _bad(
                "/me request is only valid with delegated authentication flow.", "BadRequest"
            )
        segs = ["users", p.user_id or "", *segs[1:]]
        low = [s.lower() for s in segs]

    def user_id(ident: str) -> str:
        user = st.resolve_user(ident)
        if user is None:
            raise _ext(404, f"The user '{ident}' was not found.")
        return user["id"]

    def folder_id(uid: str, ident: str) -> str:
        fid = st.resolve_folder(uid, ident)
        if fid is None:
            raise _ext(404, f"The mail folder '{ident}' was not found.")
        return fid

    n = len(low)
    if n == 3 and low[0] == "users" and low[2] == "messages":
        return ResourceSpec("outlook", "mail_user", user_id=user_id(segs[1]))
    if n == 5 and low[0] == "users" and low[2] == "mailfolders" and low[4] == "messages":
        uid = user_id(segs[1])
        return ResourceSpec(
            "outlook", "mail_folder", user_id=uid, folder_id=folder_id(uid, segs[3])
        )
    if low == ["chats", "getallmessages"]:
        return ResourceSpec("teams", "all_chats")
    if n == 3 and low[0] == "chats" and low[2] == "messages":
        if segs[1] not in st.chats:
            raise _ext(404, f"Chat '{segs[1]}' was not found.")
        return ResourceSpec("teams", "chat", chat_id=segs[1])
    if n == 4 and low[0] == "users" and low[2:] == ["chats", "getallmessages"]:
        return ResourceSpec("teams", "user_chats", user_id=user_id(segs[1]))
    if low == ["teams", "getallmessages"]:
        return ResourceSpec("teams", "all_channels")
    if n == 5 and low[0] == "teams" and low[2] == "channels" and low[4] == "messages":
        team = st.teams.get(segs[1])
        if team is None or segs[3] not in team.channels:
            raise _ext(404, "The team or channel was not found.")
        return ResourceSpec("teams", "channel", team_id=segs[1], channel_id=segs[3])
    if low == ["users"]:
        return ResourceSpec("directory", "users")
    if n == 2 and low[0] == "users":
        return ResourceSpec("directory", "user", user_id=user_id(segs[1]))
    raise _ext(400, f"The resource '{resource}' is not supported for change notifications.")


def _check_permission(ctx: Ctx, spec: ResourceSpec) -> None:
    p = ctx.principal
    perms: tuple[str, ...]
    if spec.family == "outlook":
        perms = ("Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic.All")
    elif spec.kind in ("channel", "all_channels"):
        perms = ("ChannelMessage.Read.All", "ChannelMessage.Read.Group")
    elif spec.family == "teams":
        perms = ("Chat.Read.All", "Chat.ReadWrite.All", "Chat.Read", "Chat.ReadWrite")
    else:
        perms = (
            "User.Read.All",
            "User.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
            "User.Read",
        )
    if not p.has_any(*perms):
        raise _ext(
            403,
            "Caller does not have access to the resource. Missing permission: one "
            f"of {', '.join(perms)}.",
        )
    if spec.family == "teams":
        require_protected_api(ctx)
    if p.delegated and spec.user_id and spec.user_id != p.user_id:
        raise _ext(
            403,
            "Access is denied to the requested resource. The user may not have enough permission.",
        )


def _max_minutes(ctx: Ctx, spec: ResourceSpec, rich: bool) -> int:
    cfg = ctx.app.config.section("subscriptions")
    if spec.family == "outlook":
        return int(cfg["mail_rich_max_minutes"] if rich else cfg["mail_max_minutes"])
    if spec.family == "teams":
        return int(cfg["teams_max_minutes"])
    return int(cfg["directory_max_minutes"])


def _check_expiration(
    ctx: Ctx, spec: ResourceSpec, value: Any, rich: bool, op: str = "Create"
) -> datetime:
    if not value:
        raise _bad(
            "expirationDateTime is a required property for subscription creation.", "InvalidRequest"
        )
    try:
        exp = parse_iso(str(value))
    except ValueError as exc:
        raise _bad(
            f"Cannot convert the literal '{value}' to the expected type 'Edm.DateTimeOffset'.",
            "BadRequest",
        ) from exc
    now = ctx.state.clock.now()
    max_min = _max_minutes(ctx, spec, rich)
    if exp > now + timedelta(minutes=max_min):
        raise _ext(400, f"Subscription expiration can only be {max_min} minutes in the future.", op)
    floor = now + timedelta(minutes=int(ctx.app.config.get("subscriptions", "min_minutes")))
    if exp < floor:
        exp = floor  # silently raised to the minimum lifetime
    return exp.replace(microsecond=(exp.microsecond // 1000) * 1000)


def validation_handshake(ctx: Ctx, url: str) -> str | None:
    """POST ``?validationToken=``; return an error message or ``None`` when valid."""
    token = (
        "Validation: Testing client application reachability for subscription "
        f"Request-Id: {uuid.uuid4()}"
    )
    sep = "&" if "?" in url else "?"
    target = f"{url}{sep}validationToken={quote(token, safe='')}"
    timeout = float(ctx.app.config.get("subscriptions", "handshake_timeout_s"))
    try:
        resp = outbound.post(
            target,
            ctx.app.config,
            data=b"",
            content_type="text/plain; charset=utf-8",
            timeout=timeout,
        )
    except requests.Timeout:
        return (
            "Subscription validation request failed. Notification endpoint must respond "
            "with 200 OK to validation request. (timed out after "
            f"{timeout:g} seconds)"
        )
    except requests.RequestException as exc:
        return (
            "Subscription validation request failed. Notification endpoint must respond "
            f"with 200 OK to validation request. ({type(exc).__name__})"
        )
    if resp.status_code != 200:
        return (
            "Subscription validation request failed. Notification endpoint must respond "
            "with 200 OK to validation request."
        )
    ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "text/plain":
        return "Subscription validation request failed. Response must have Content-Type text/plain."
    if resp.content.decode("utf-8", "replace") != token:
        return (
            "Subscription validation request failed. Response must exactly match "
            "validationToken query parameter."
        )
    return None


def _quota(ctx: Ctx, spec: ResourceSpec) -> None:
    cfg = ctx.app.config.section("subscriptions")
    subs = ctx.state.subscriptions
    if spec.family == "outlook":
        if len(subs.at("outlook", spec.user_id or "")) >= int(cfg["mailbox_quota"]):
            raise _ext(
                403,
                "Number of subscriptions has exceeded the quota. Limit: "
                f"{cfg['mailbox_quota']} subscriptions per mailbox.",
            )
    elif spec.family == "teams":
        if subs.count_family("teams") >= int(cfg["teams_org_quota"]):
            raise _ext(
                403,
                "Number of subscriptions has exceeded the quota. Limit: "
                f"{cfg['teams_org_quota']} Teams subscriptions per organization.",
            )
        if spec.kind == "user_chats" and len(subs.at("user_chats", spec.user_id or "")) >= int(
            cfg["user_chats_quota"]
        ):
            raise _ext(
                403,
                "Number of subscriptions has exceeded the quota. Limit: "
                f"{cfg['user_chats_quota']} user-level chat subscriptions per user.",
            )


def _duplicate(ctx: Ctx, spec: ResourceSpec, change_types: list[str]) -> Subscription | None:
    key = (ctx.principal.app_id, spec.key(), tuple(sorted(change_types)))
    found = ctx.state.subscriptions.by_combination.get(key)
    return ctx.state.subscriptions.get(found) if found is not None else None


def _budget(ctx: Ctx, op: str) -> None:
    raise_if_throttled(ctx, ctx.app.throttler.subscription(ctx.principal.app_id, op))


def _purge_expired(ctx: Ctx) -> None:
    for sid in ctx.state.subscriptions.expired(ctx.state.clock.now()):
        del ctx.state.subscriptions[sid]


def create_subscription(ctx: Ctx) -> Response:
    _budget(ctx, "ops")
    body = ctx.body_json()
    cfg = ctx.app.config.section("subscriptions")
    for req_field in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
        if not body.get(req_field):
            raise _bad(f"{req_field} is a required property for subscription creation.")
    change_types = [c.strip() for c in str(body["changeType"]).split(",") if c.strip()]
    if not change_types or any(c not in VALID_CHANGE_TYPES for c in change_types):
        raise _bad(
            f"Invalid changeType '{body['changeType']}'. Allowed values: created, updated, deleted."
        )
    client_state = body.get("clientState")
    if client_state is not None and len(str(client_state)) > int(cfg["client_state_max"]):
        raise _bad(
            f"clientState must not exceed {cfg['client_state_max']} characters.", "ValidationError"
        )
    rich = bool(body.get("includeResourceData"))
    if rich and not (body.get("encryptionCertificate") and body.get("encryptionCertificateId")):
        raise _bad(
            "encryptionCertificate and encryptionCertificateId are required when "
            "includeResourceData is true.",
            "ValidationError",
        )
    tls = str(body.get("latestSupportedTlsVersion") or "v1_2")
    if tls not in TLS_VERSIONS:
        raise _bad(f"Invalid latestSupportedTlsVersion '{tls}'.", "ValidationError")
    url = str(body["notificationUrl"])
    lifecycle = body.get("lifecycleNotificationUrl") or None
    for u in filter(None, (url, lifecycle)):
        problem = outbound.url_problem(u, ctx.app.config)
        if problem:
            raise _bad(problem, "ValidationError")
    with ctx.state.lock:
        _purge_expired(ctx)
        spec = parse_resource(ctx, str(body["resource"]))
        if spec.family == "directory" and "created" in change_types:
            raise _bad(
                "changeType 'created' is not supported for this resource; use updated or deleted.",
                "ValidationError",
            )
        _check_permission(ctx, spec)
        exp = _check_expiration(ctx, spec, body["expirationDateTime"], rich)
        now = ctx.state.clock.now()
        lifecycle_after = timedelta(minutes=int(cfg["teams_lifecycle_required_after_minutes"]))
        if spec.family == "teams" and not lifecycle and exp > now + lifecycle_after:
            raise _bad(
                "lifecycleNotificationUrl is a required property for subscription "
                "creation on this resource when the expirationDateTime value is set to "
                "greater than 1 hour",
                "ValidationError",
            )
        dup = _duplicate(ctx, spec, change_types)
        if dup is not None:
            raise GraphError(
                409,
                "ExtensionError",
                f"Subscription Id {dup.id} already exists for the requested combination",
            )
        _quota(ctx, spec)
    # handshake outside the lock: both URLs, each validated separately
    for u in filter(None, (url, lifecycle)):
        err = validation_handshake(ctx, u)
        if err:
            log.info("validation handshake against %s failed: %s", u, err)
            raise _bad(err, "ValidationError")
    with ctx.state.lock:
        dup = _duplicate(ctx, spec, change_types)
        if dup is not None:
            raise GraphError(
                409,
                "ExtensionError",
                f"Subscription Id {dup.id} already exists for the requested combination",
            )
        _quota(ctx, spec)
        p = ctx.principal
        sub = Subscription(
            id=str(uuid.uuid4()),
            resource=str(body["resource"]),
            spec=spec,
            change_types=change_types,
            notification_url=url,
            lifecycle_url=lifecycle,
            expiration=exp,
            client_state=None if client_state is None else str(client_state),
            application_id=p.app_id,
            creator_id=(p.user_id or "") if p.delegated else str(p.claims.get("oid", "")),
            tls_version=tls,
            include_resource_data=rich,
            encryption_certificate=body.get("encryptionCertificate"),
            encryption_certificate_id=body.get("encryptionCertificateId"),
            notification_content_type=str(
                body.get("notificationContentType") or "application/json"
            ),
            notification_url_app_id=body.get("notificationUrlAppId"),
        )
        ctx.state.subscriptions[sub.id] = sub
        out = sub.to_json()
    log.info("subscription %s created for %s", sub.id, sub.resource)
    return entity(ctx, "subscriptions/$entity", out, status=201)


def _visible(ctx: Ctx, sub: Subscription) -> bool:
    p = ctx.principal
    if sub.application_id != p.app_id:
        return False
    return not p.delegated or sub.creator_id == p.user_id


def _get_sub(ctx: Ctx) -> Subscription:
    _purge_expired(ctx)
    sub = ctx.state.subscriptions.get(ctx.params["sub"])
    if sub is None or not _visible(ctx, sub):
        raise GraphError(404, "ResourceNotFound", "The object was not found.")
    return sub


def get_subscription(ctx: Ctx) -> Response:
    _budget(ctx, "get")
    with ctx.state.lock:
        out = _get_sub(ctx).to_json()
    return entity(ctx, "subscriptions/$entity", out)


def list_subscriptions(ctx: Ctx) -> Response:
    _budget(ctx, "list")
    with ctx.state.lock:
        _purge_expired(ctx)
        items = [
            s.to_json(hide_client_state=True)
            for s in ctx.state.subscriptions.values()
            if _visible(ctx, s)
        ]
    return collection(ctx, "subscriptions", items)


def update_subscription(ctx: Ctx) -> Response:
    _budget(ctx, "ops")
    body = ctx.body_json()
    with ctx.state.lock:
        sub = _get_sub(ctx)
        if "lifecycleNotificationUrl" in body and body["lifecycleNotificationUrl"] != (
            sub.lifecycle_url
        ):
            raise _bad(
                "lifecycleNotificationUrl cannot be updated; delete the subscription "
                "and create a new one.",
                "ValidationError",
            )
        allowed = {
            "expirationDateTime",
            "notificationUrl",
            "notificationUrlAppId",
            "lifecycleNotificationUrl",
        }
        extra = [k for k in body if k not in allowed and not k.startswith("@")]
        if extra:
            raise _bad(f"Property '{extra[0]}' cannot be updated.", "ValidationError")
        exp = sub.expiration
        if "expirationDateTime" in body:
            exp = _check_expiration(
                ctx, sub.spec, body["expirationDateTime"], sub.include_resource_data, op="Update"
            )
            now = ctx.state.clock.now()
            if (
                sub.spec.family == "teams"
                and not sub.lifecycle_url
                and exp > now + timedelta(hours=1)
            ):
                raise _bad(
                    "lifecycleNotificationUrl is a required property for subscription "
                    "creation on this resource when the expirationDateTime value is "
                    "set to greater than 1 hour",
                    "ValidationError",
                )
        new_url = body.get("notificationUrl")
    if new_url and new_url != sub.notification_url:
        problem = outbound.url_problem(str(new_url), ctx.app.config)
        if problem:
            raise _bad(problem, "ValidationError")
        err = validation_handshake(ctx, str(new_url))
        if err:
            raise _bad(err, "ValidationError")
    with ctx.state.lock:
        sub = _get_sub(ctx)
        sub.expiration = exp
        sub.last_reauth_notice = None
        if new_url:
            sub.notification_url = str(new_url)
        if "notificationUrlAppId" in body:
            sub.notification_url_app_id = body["notificationUrlAppId"]
        ctx.state.subscriptions.changed(sub)
        out = sub.to_json()
    return entity(ctx, "subscriptions/$entity", out)


def delete_subscription(ctx: Ctx) -> Response:
    _budget(ctx, "ops")
    with ctx.state.lock:
        sub = _get_sub(ctx)
        del ctx.state.subscriptions[sub.id]
    return empty_response(204)


def reauthorize_subscription(ctx: Ctx) -> Response:
    _budget(ctx, "reauthorize")
    with ctx.state.lock:
        sub = _get_sub(ctx)
        _check_permission(ctx, sub.spec)
        sub.last_reauth_notice = ctx.state.clock.now()
        ctx.state.subscriptions.changed(sub)
    return empty_response(204)


def register(router: Router) -> None:
    router.add("POST", "subscriptions", create_subscription)
    router.add("GET", "subscriptions", list_subscriptions)
    router.add("GET", "subscriptions/{sub}", get_subscription)
    router.add("PATCH", "subscriptions/{sub}", update_subscription)
    router.add("DELETE", "subscriptions/{sub}", delete_subscription)
    router.add("POST", "subscriptions/{sub}/reauthorize", reauthorize_subscription)
