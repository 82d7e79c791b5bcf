"""In-memory tenant state: apps, users, mailboxes, chats, teams, subscriptions.

Everything is guarded by ``EmulatorState.lock`` (an ``RLock``).  Mutating
methods assume the caller holds the lock; they record changes in per-container
change streams (used by delta queries) and emit change notifications through
``notifier`` (set by the delivery manager).
"""

from __future__ import annotations

import base64
import itertools
import secrets
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .config import Clock
from .httptypes import iso, new_guid

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

WELL_KNOWN_FOLDERS = {
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "drafts": "Drafts",
    "deleteditems": "Deleted Items",
    "archive": "Archive",
    "junkemail": "Junk Email",
    "outbox": "Outbox",
}

DEFAULT_USER_PROPS = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)

DEFAULT_APP_ROLES = (
    "User.Read.All",
    "Mail.ReadWrite",
    "Mail.Send",
    "Chat.Read.All",
    "ChannelMessage.Read.All",
)
DEFAULT_DELEGATED_SCOPES = (
    "User.Read",
    "User.ReadBasic.All",
    "Mail.ReadWrite",
    "Mail.Send",
    "Chat.ReadWrite",
    "Chat.Create",
    "ChatMessage.Send",
    "ChannelMessage.Send",
    "offline_access",
    "openid",
    "profile",
    "email",
)


def exchange_id(prefix: str = "AAMkAG", raw: bytes | None = None) -> str:
    """An Exchange-looking id (base64url body, ``=`` padded like real ids)."""
    raw = raw if raw is not None else secrets.token_bytes(45)
    body = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    return prefix + body + "AAA="


@dataclass
class Secret:
    key_id: str
    value: str
    display_name: str = "secret"
    start: datetime | None = None
    end: datetime | None = None
    expired: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "keyId": self.key_id,
            "hint": self.value[:3],
            "displayName": self.display_name,
            "startDateTime": iso(self.start) if self.start else None,
            "endDateTime": iso(self.end) if self.end else None,
            "expired": self.expired,
        }


@dataclass
class AppCertificate:
    """A certificate uploaded to the app registration (its public part only)."""

    pem: str
    thumbprint: str  # SHA-1, upper-case hex (what Entra shows; the JWT's x5t)
    thumbprint_sha256: str  # hex (the JWT's x5t#S256)
    display_name: str = "certificate"
    start: datetime | None = None
    end: datetime | None = None

    def public(self) -> dict[str, Any]:
        return {
            "thumbprint": self.thumbprint,
            "displayName": self.display_name,
            "startDateTime": iso(self.start) if self.start else None,
            "endDateTime": iso(self.end) if self.end else None,
        }


DEFAULT_FEDERATED_AUDIENCE = "api://AzureADTokenExchange"


@dataclass
class FederatedCredential:
    """A federated identity credential: tokens of `issuer` about `subject` (for one of
    `audiences`) stand in for a secret; their signature is checked against the issuer's
    keys (`jwks`, or fetched from `jwks_uri`)."""

    id: str
    name: str
    issuer: str
    subject: str
    audiences: list[str] = field(default_factory=lambda: [DEFAULT_FEDERATED_AUDIENCE])
    jwks: dict[str, Any] | None = None
    jwks_uri: str = ""

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "issuer": self.issuer,
            "subject": self.subject,
            "audiences": list(self.audiences),
            "jwksUri": self.jwks_uri or None,
        }


@dataclass
class App:
    client_id: str
    display_name: str
    sp_id: str
    secrets: list[Secret] = field(default_factory=list)
    certificates: list[AppCertificate] = field(default_factory=list)
    federated_credentials: list[FederatedCredential] = field(default_factory=list)
    roles: set[str] = field(default_factory=lambda: set(DEFAULT_APP_ROLES))
    delegated_scopes: set[str] = field(default_factory=lambda: set(DEFAULT_DELEGATED_SCOPES))
    redirect_uris: list[str] = field(default_factory=list)  # exact matches; empty = none
    # Teams protected-API access (application-only reads of chat messages) approved by
    # Microsoft for this app; without it getAllMessages answers 403.
    protected_api: bool = True

    def public(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "display_name": self.display_name,
            "service_principal_id": self.sp_id,
            "roles": sorted(self.roles),
            "delegated_scopes": sorted(self.delegated_scopes),
            "redirect_uris": list(self.redirect_uris),
            "protected_api": self.protected_api,
            "secrets": [s.public() for s in self.secrets],
            "certificates": [c.public() for c in self.certificates],
            "federated_credentials": [f.public() for f in self.federated_credentials],
        }


@dataclass
class Entry:
    seq: int
    removed: bool
    created_seq: int


@dataclass
class Stream:
    entries: OrderedDict[str, Entry] = field(default_factory=OrderedDict)
    floor: int = 0  # delta rounds starting before this seq can no longer be served
    tombstones: int = 0


@dataclass
class ResourceSpec:
    family: str  # outlook | teams | directory
    kind: str  # mail_folder | mail_user | chat | all_chats | user_chats | channel | all_channels
    #            | users | user
    user_id: str | None = None
    folder_id: str | None = None
    chat_id: str | None = None
    team_id: str | None = None
    channel_id: str | None = None

    def key(self) -> tuple[Any, ...]:
        return (
            self.kind,
            self.user_id,
            self.folder_id,
            self.chat_id,
            self.team_id,
            self.channel_id,
        )


@dataclass
class Subscription:
    id: str
    resource: str
    spec: ResourceSpec
    change_types: list[str]
    notification_url: str
    lifecycle_url: str | None
    expiration: datetime
    client_state: str | None
    application_id: str
    creator_id: str
    tls_version: str = "v1_2"
    include_resource_data: bool = False
    encryption_certificate: str | None = None
    encryption_certificate_id: str | None = None
    notification_content_type: str = "application/json"
    notification_url_app_id: str | None = None
    last_reauth_notice: datetime | None = None

    def to_json(self, hide_client_state: bool = False) -> dict[str, Any]:
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": ",".join(self.change_types),
            "clientState": None if hide_client_state else self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": iso(self.expiration, ms=False),
            "creatorId": self.creator_id,
            "includeResourceData": self.include_resource_data,
            "latestSupportedTlsVersion": self.tls_version,
            "encryptionCertificate": self.encryption_certificate,
            "encryptionCertificateId": self.encryption_certificate_id,
            "notificationUrlAppId": self.notification_url_app_id,
            "notificationContentType": self.notification_content_type,
        }


@dataclass
class Mailbox:
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    wellknown: dict[str, str] = field(default_factory=dict)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Chat:
    data: dict[str, Any]
    members: list[str]
    messages: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)


@dataclass
class Channel:
    data: dict[str, Any]
    messages: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)


@dataclass
class Team:
    data: dict[str, Any]
    members: list[str]
    channels: dict[str, Channel] = field(default_factory=dict)


# Versions of subscription tables, unique across tables (a reset swaps the table).
_table_versions = itertools.count(1)


class SubscriptionTable(dict[str, Subscription]):
    """The tenant's subscriptions by id, with the indexes that keep creating one and
    notifying for one change independent of how many there are (a fleet tenant has tens of
    thousands). Only item assignment, `del`, `pop` and `clear` change it; a subscription's
    resource and app never change once it is stored; whoever changes a stored one's
    expiration or lifecycle state calls `changed`. `version` changes with every change."""

    def __init__(self) -> None:
        super().__init__()
        self.by_target: dict[tuple[str, ...], set[str]] = {}
        self.by_combination: dict[tuple[Any, ...], str] = {}
        self.family_counts: dict[str, int] = {}
        # A lower bound of every stored expiration (renewals only move them later): nothing
        # can have expired before it, so a purge can skip the scan until then.
        self.earliest_expiration: datetime | None = None
        self.version = next(_table_versions)

    def changed(self, sub: Subscription) -> None:
        """A stored subscription's expiration or reauthorization state was changed."""
        self.version = next(_table_versions)
        if self.earliest_expiration is not None and sub.expiration < self.earliest_expiration:
            self.earliest_expiration = sub.expiration

    @staticmethod
    def targets(sub: Subscription) -> list[tuple[str, ...]]:
        spec = sub.spec
        if spec.family == "outlook":
            return [("outlook", spec.user_id or "")]
        if spec.kind == "user_chats":
            return [("user_chats", spec.user_id or "")]
        if spec.kind == "chat":
            return [("chat", spec.chat_id or "")]
        return [(spec.kind,)]

    @staticmethod
    def combination(sub: Subscription) -> tuple[Any, ...]:
        return (sub.application_id, sub.spec.key(), tuple(sorted(sub.change_types)))

    def __setitem__(self, key: str, sub: Subscription) -> None:
        if key in self:
            self.__delitem__(key)
        self.version = next(_table_versions)
        super().__setitem__(key, sub)
        for target in self.targets(sub):
            self.by_target.setdefault(target, set()).add(key)
        self.by_combination[self.combination(sub)] = key
        family = sub.spec.family
        self.family_counts[family] = self.family_counts.get(family, 0) + 1
        if self.earliest_expiration is None or sub.expiration < self.earliest_expiration:
            self.earliest_expiration = sub.expiration

    def __delitem__(self, key: str) -> None:
        sub = self[key]
        super().__delitem__(key)
        self.version = next(_table_versions)
        for target in self.targets(sub):
            ids = self.by_target.get(target)
            if ids is not None:
                ids.discard(key)
                if not ids:
                    del self.by_target[target]
        if self.by_combination.get(self.combination(sub)) == key:
            del self.by_combination[self.combination(sub)]
        self.family_counts[sub.spec.family] -= 1

    def pop(self, key: str, *default: Any) -> Any:
        if key not in self:
            if default:
                return default[0]
            raise KeyError(key)
        sub = self[key]
        self.__delitem__(key)
        return sub

    def clear(self) -> None:
        super().clear()
        self.version = next(_table_versions)
        self.by_target.clear()
        self.by_combination.clear()
        self.family_counts.clear()
        self.earliest_expiration = None

    def at(self, *target: str) -> list[Subscription]:
        """The subscriptions on one target: ("outlook", user id), ("user_chats", user id),
        ("chat", chat id), or a tenant-wide kind such as ("all_chats",)."""
        return [self[key] for key in self.by_target.get(target, ())]

    def count_family(self, family: str) -> int:
        return self.family_counts.get(family, 0)

    def expired(self, now: datetime) -> list[str]:
        """Ids of the subscriptions expired at `now` (a scan only when one can be)."""
        if self.earliest_expiration is None or now < self.earliest_expiration:
            return []
        doomed = [sub.id for sub in self.values() if sub.expiration <= now]
        alive = [sub.expiration for sub in self.values() if sub.expiration > now]
        self.earliest_expiration = min(alive) if alive else None
        return doomed


NotificationSink = Callable[[list[tuple[Subscription, dict[str, Any]]]], None]


class EmulatorState:
    """All mutable tenant data. Hold ``lock`` while calling any method."""

    def __init__(
        self, clock: Clock, tenant_id: str, domain: str, tenant_name: str = "Fleet Demo"
    ) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.tenant_id = tenant_id
        self.domain = domain
        self.tenant_name = tenant_name
        self.apps: dict[str, App] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.upn_index: dict[str, str] = {}
        self.mailboxes: dict[str, Mailbox] = {}
        self.chats: dict[str, Chat] = {}
        # Chat ids by member, in the order the chats were added (add_chat keeps it).
        self.chats_by_member: dict[str, list[str]] = {}
        self.teams: dict[str, Team] = {}
        self.streams: dict[tuple[str, ...], Stream] = {}
        self.seq = 0
        self.subscriptions = SubscriptionTable()
        self.cursors: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.auth_codes: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.refresh_tokens: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Drafts whose send was accepted and that have not reached Sent Items yet
        # (graph_mail.settle_outbox).
        self.outbox: list[dict[str, Any]] = []
        self.sent_log: deque[dict[str, Any]] = deque(maxlen=50_000)
        self.sent_seq = 0
        self.service_account_upn: str | None = None
        # Staff sign-in (sign_in.py): per user id {"app_roles", "amr", "groups"}.
        self.sign_in_profiles: dict[str, dict[str, Any]] = {}
        self.id_token_tamper: str | None = None
        self.notifier: NotificationSink | None = None
        self.traffic: Any = None  # the running or last traffic.TrafficBurst
        self.tombstone_cap = 2000
        self.max_cursors = 20_000
        self._last_chat_ms = 0

    # ------------------------------------------------------------------ users

    def add_user(self, user: dict[str, Any], rng: Any = None) -> dict[str, Any]:
        """Add a user with a mailbox; ``rng`` (``random.Random``) makes folder ids stable."""
        self.users[user["id"]] = user
        self.upn_index[user["userPrincipalName"].lower()] = user["id"]
        mb = Mailbox()
        for name, display in WELL_KNOWN_FOLDERS.items():
            raw = bytes(rng.getrandbits(8) for _ in range(45)) if rng is not None else None
            fid = exchange_id("AAMkAGF", raw)
            mb.folders[fid] = {
                "id": fid,
                "displayName": display,
                "parentFolderId": None,
                "childFolderCount": 0,
                "unreadItemCount": 0,
                "totalItemCount": 0,
                "sizeInBytes": 0,
                "isHidden": False,
                "_wellKnownName": name,
            }
            mb.wellknown[name] = fid
        self.mailboxes[user["id"]] = mb
        return user

    def resolve_user(self, ident: str) -> dict[str, Any] | None:
        if ident in self.users:
            return self.users[ident]
        uid = self.upn_index.get(ident.lower())
        if uid:
            return self.users[uid]
        low = ident.lower()
        for u in self.users.values():
            if u["id"].lower() == low or (u.get("mail") or "").lower() == low:
                return u
        return None

    def resolve_folder(self, user_id: str, folder: str) -> str | None:
        mb = self.mailboxes.get(user_id)
        if mb is None:
            return None
        if folder in mb.folders:
            return folder
        return mb.wellknown.get(folder.lower())

    # ------------------------------------------------------------------ change streams

    def _touch(self, key: tuple[str, ...], item_id: str, removed: bool = False) -> int:
        self.seq += 1
        st = self.streams.setdefault(key, Stream())
        prev = st.entries.pop(item_id, None)
        if prev is not None and prev.removed:
            st.tombstones -= 1
        created_seq = prev.created_seq if (prev is not None and not prev.removed) else self.seq
        st.entries[item_id] = Entry(self.seq, removed, created_seq)
        if removed:
            st.tombstones += 1
            if st.tombstones > self.tombstone_cap:
                self._prune(st)
        return self.seq

    def _prune(self, st: Stream) -> None:
        for item_id in list(st.entries.keys()):
            if st.tombstones <= self.tombstone_cap // 2:
                break
            e = st.entries[item_id]
            if e.removed:
                del st.entries[item_id]
                st.tombstones -= 1
                st.floor = max(st.floor, e.seq)

    # ------------------------------------------------------------------ mail

    def mail_stream_key(self, user_id: str, folder_id: str) -> tuple[str, ...]:
        return ("mail", user_id, folder_id)

    def put_message(
        self, user_id: str, folder_id: str, msg: dict[str, Any], notify: bool = True
    ) -> dict[str, Any]:
        mb = self.mailboxes[user_id]
        msg["parentFolderId"] = folder_id
        mb.messages[msg["id"]] = msg
        self._recount(mb, folder_id)
        self._touch(self.mail_stream_key(user_id, folder_id), msg["id"])
        if notify:
            self._notify_mail("created", user_id, folder_id, msg)
        return msg

    def update_message(self, user_id: str, message_id: str, changes: dict[str, Any]) -> dict:
        mb = self.mailboxes[user_id]
        msg = mb.messages[message_id]
        msg.update(changes)
        msg["lastModifiedDateTime"] = iso(self.clock.now(), ms=False)
        msg["changeKey"] = exchange_id("CQAAABYAAA", secrets.token_bytes(12))
        msg["@odata.etag"] = f'W/"{msg["changeKey"]}"'
        self._recount(mb, msg["parentFolderId"])
        self._touch(self.mail_stream_key(user_id, msg["parentFolderId"]), message_id)
        self._notify_mail("updated", user_id, msg["parentFolderId"], msg)
        return msg

    def move_message(self, user_id: str, message_id: str, dest_folder_id: str) -> dict:
        mb = self.mailboxes[user_id]
        msg = mb.messages[message_id]
        old = msg["parentFolderId"]
        if old == dest_folder_id:
            return msg
        self._touch(self.mail_stream_key(user_id, old), message_id, removed=True)
        self._notify_mail("deleted", user_id, old, msg)
        msg["parentFolderId"] = dest_folder_id
        msg["lastModifiedDateTime"] = iso(self.clock.now(), ms=False)
        self._recount(mb, old)
        self._recount(mb, dest_folder_id)
        self._touch(self.mail_stream_key(user_id, dest_folder_id), message_id)
        self._notify_mail("created", user_id, dest_folder_id, msg)
        return msg

    def delete_message(self, user_id: str, message_id: str, hard: bool = False) -> None:
        mb = self.mailboxes[user_id]
        msg = mb.messages[message_id]
        deleted_items = mb.wellknown["deleteditems"]
        if not hard and msg["parentFolderId"] != deleted_items:
            self.move_message(user_id, message_id, deleted_items)
            return
        folder = msg["parentFolderId"]
        del mb.messages[message_id]
        self._recount(mb, folder)
        self._touch(self.mail_stream_key(user_id, folder), message_id, removed=True)
        self._notify_mail("deleted", user_id, folder, msg)

    def _recount(self, mb: Mailbox, folder_id: str) -> None:
        f = mb.folders.get(folder_id)
        if f is None:
            return
        msgs = [m for m in mb.messages.values() if m["parentFolderId"] == folder_id]
        f["totalItemCount"] = len(msgs)
        f["unreadItemCount"] = sum(1 for m in msgs if not m.get("isRead"))
        f["sizeInBytes"] = sum(len(str(m.get("body", {}).get("content", ""))) + 800 for m in msgs)

    def trim_folder(self, user_id: str, folder_id: str, keep: int) -> None:
        """Hard-delete the oldest messages beyond ``keep`` (bounds demo-mode growth)."""
        mb = self.mailboxes[user_id]
        msgs = sorted(
            (m for m in mb.messages.values() if m["parentFolderId"] == folder_id),
            key=lambda m: m.get("receivedDateTime") or "",
        )
        for m in msgs[: max(0, len(msgs) - keep)]:
            self.delete_message(user_id, m["id"], hard=True)

    def _notify_mail(self, change: str, user_id: str, folder_id: str, msg: dict[str, Any]) -> None:
        if not self.subscriptions or self.notifier is None:
            return
        out = []
        for sub in self.subscriptions.at("outlook", user_id):
            sp = sub.spec
            if change not in sub.change_types:
                continue
            if sp.kind == "mail_folder" and sp.folder_id != folder_id:
                continue
            res = f"Users/{user_id}/Messages/{msg['id']}"
            out.append(
                (
                    sub,
                    self._notification(
                        sub,
                        change,
                        res,
                        "#Microsoft.Graph.Message",
                        msg["id"],
                        msg.get("@odata.etag"),
                    ),
                )
            )
        if out:
            self.notifier(out)

    def _notification(
        self,
        sub: Subscription,
        change: str,
        resource: str,
        odata_type: str,
        item_id: str,
        etag: str | None,
    ) -> dict[str, Any]:
        return {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": iso(sub.expiration),
            "changeType": change,
            "resource": resource,
            "resourceData": {
                "@odata.type": odata_type,
                "@odata.id": resource,
                "@odata.etag": etag,
                "id": item_id,
            },
            "clientState": sub.client_state,
            "tenantId": self.tenant_id,
        }

    # ------------------------------------------------------------------ teams

    def next_chat_message_id(self) -> str:
        ms = int(self.clock.timestamp() * 1000)
        ms = max(ms, self._last_chat_ms + 1)
        self._last_chat_ms = ms
        return str(ms)

    def add_chat(self, chat: Chat) -> None:
        cid = chat.data["id"]
        if cid not in self.chats:
            for member in chat.members:
                self.chats_by_member.setdefault(member, []).append(cid)
        self.chats[cid] = chat

    def chats_of(self, user_id: str) -> list[Chat]:
        """The user's chats in the order they were added (an index: a fleet tenant has
        thousands of chats, and every getAllMessages delta asks for one user's)."""
        return [self.chats[cid] for cid in self.chats_by_member.get(user_id, ())]

    def add_team(self, team: Team) -> None:
        self.teams[team.data["id"]] = team

    def chat_message(
        self,
        sender_id: str,
        content: str,
        content_type: str = "text",
        chat_id: str | None = None,
        team_id: str | None = None,
        channel_id: str | None = None,
        created: datetime | None = None,
        reply_to: str | None = None,
    ) -> dict[str, Any]:
        sender = self.users[sender_id]
        mid = self.next_chat_message_id()
        when = iso(created or self.clock.now())
        msg: dict[str, Any] = {
            "id": mid,
            "replyToId": reply_to,
            "etag": mid,
            "messageType": "message",
            "createdDateTime": when,
            "lastModifiedDateTime": when,
            "lastEditedDateTime": None,
            "deletedDateTime": None,
            "subject": None,
            "summary": None,
            "chatId": chat_id,
            "importance": "normal",
            "locale": "en-us",
            "webUrl": None,
            "channelIdentity": ({"teamId": team_id, "channelId": channel_id} if team_id else None),
            "policyViolation": None,
            "eventDetail": None,
            "from": {
                "application": None,
                "device": None,
                "user": {
                    "@odata.type": "#microsoft.graph.teamworkUserIdentity",
                    "id": sender["id"],
                    "displayName": sender["displayName"],
                    "userIdentityType": "aadUser",
                    "tenantId": self.tenant_id,
                },
            },
            "body": {"contentType": content_type, "content": content},
            "attachments": [],
            "mentions": [],
            "reactions": [],
        }
        if team_id:
            msg["webUrl"] = (
                f"https://teams.microsoft.com/l/message/{channel_id}/{mid}"
                f"?groupId={team_id}&tenantId={self.tenant_id}"
            )
        return msg

    def post_chat_message(self, chat_id: str, msg: dict[str, Any], notify: bool = True) -> dict:
        chat = self.chats[chat_id]
        chat.messages[msg["id"]] = msg
        chat.data["lastUpdatedDateTime"] = msg["createdDateTime"]
        self._touch(("chat", chat_id), msg["id"])
        if notify:
            self._notify_teams("created", msg, chat_id=chat_id)
        return msg

    def post_channel_message(
        self, team_id: str, channel_id: str, msg: dict[str, Any], notify: bool = True
    ) -> dict[str, Any]:
        ch = self.teams[team_id].channels[channel_id]
        ch.messages[msg["id"]] = msg
        self._touch(("channel", team_id, channel_id), msg["id"])
        if notify:
            self._notify_teams("created", msg, team_id=team_id, channel_id=channel_id)
        return msg

    def soft_delete_chat_message(self, chat_id: str, message_id: str) -> dict[str, Any]:
        """What Teams does when a user deletes a message: the message stays, with
        `deletedDateTime` set and its content gone; delta returns it as a change (not as
        `@removed`) and subscribers get a `deleted` notification."""
        chat = self.chats[chat_id]
        msg = chat.messages[message_id]
        now = iso(self.clock.now())
        msg.update(
            deletedDateTime=now,
            lastModifiedDateTime=now,
            attachments=[],
            mentions=[],
            reactions=[],
            summary=None,
            subject=None,
        )
        msg["body"] = {"contentType": msg["body"].get("contentType", "text"), "content": ""}
        self._touch(("chat", chat_id), message_id)
        self._notify_teams("deleted", msg, chat_id=chat_id)
        return msg

    def trim_chat(self, chat_id: str, keep: int) -> None:
        chat = self.chats[chat_id]
        while len(chat.messages) > keep:
            mid, _ = chat.messages.popitem(last=False)
            self._touch(("chat", chat_id), mid, removed=True)

    def trim_channel(self, team_id: str, channel_id: str, keep: int) -> None:
        ch = self.teams[team_id].channels[channel_id]
        while len(ch.messages) > keep:
            mid, _ = ch.messages.popitem(last=False)
            self._touch(("channel", team_id, channel_id), mid, removed=True)

    def _notify_teams(
        self,
        change: str,
        msg: dict[str, Any],
        chat_id: str | None = None,
        team_id: str | None = None,
        channel_id: str | None = None,
    ) -> None:
        if not self.subscriptions or self.notifier is None:
            return
        out = []
        if chat_id is not None:
            candidates = [
                *self.subscriptions.at("all_chats"),
                *self.subscriptions.at("chat", chat_id),
                *(
                    sub
                    for member in self.chats[chat_id].members
                    for sub in self.subscriptions.at("user_chats", member)
                ),
            ]
        else:
            candidates = [*self.subscriptions.at("all_channels"), *self.subscriptions.at("channel")]
        for sub in candidates:
            sp = sub.spec
            if sp.family != "teams" or change not in sub.change_types:
                continue
            if chat_id is not None:
                ok = (
                    sp.kind == "all_chats"
                    or (sp.kind == "chat" and sp.chat_id == chat_id)
                    or (sp.kind == "user_chats" and sp.user_id in self.chats[chat_id].members)
                )
                res = f"chats('{chat_id}')/messages('{msg['id']}')"
            else:
                ok = sp.kind == "all_channels" or (
                    sp.kind == "channel" and sp.team_id == team_id and sp.channel_id == channel_id
                )
                res = f"teams('{team_id}')/channels('{channel_id}')/messages('{msg['id']}')"
            if ok:
                out.append(
                    (
                        sub,
                        self._notification(
                            sub, change, res, "#Microsoft.Graph.chatMessage", msg["id"], None
                        ),
                    )
                )
        if out:
            self.notifier(out)

    # ------------------------------------------------------------------ sent log

    def record_sent(self, entry: dict[str, Any]) -> dict[str, Any]:
        self.sent_seq += 1
        entry = {"seq": self.sent_seq, "time": iso(self.clock.now()), **entry}
        self.sent_log.append(entry)
        return entry

    # ------------------------------------------------------------------ cursors

    def store_cursor(self, cursor: dict[str, Any]) -> str:
        token = base64.urlsafe_b64encode(uuid.uuid4().bytes + secrets.token_bytes(12)).decode()
        token = token.rstrip("=")
        self.cursors[token] = cursor
        while len(self.cursors) > self.max_cursors:
            self.cursors.popitem(last=False)
        return token

    def expire_cursors(self, user_id: str | None = None) -> int:
        if user_id is None:
            n = len(self.cursors)
            self.cursors.clear()
            return n
        doomed = [t for t, c in self.cursors.items() if c.get("user_id") == user_id]
        for t in doomed:
            del self.cursors[t]
        return len(doomed)

    # ------------------------------------------------------------------ misc

    def new_id(self) -> str:
        return new_guid()

    def stats(self) -> dict[str, Any]:
        return {
            "users": len(self.users),
            "messages": sum(len(m.messages) for m in self.mailboxes.values()),
            "chats": len(self.chats),
            "chat_messages": sum(len(c.messages) for c in self.chats.values()),
            "teams": len(self.teams),
            "subscriptions": len(self.subscriptions),
            "delta_cursors": len(self.cursors),
            "sent": len(self.sent_log),
            "seq": self.seq,
        }
