"""The end-to-end probe: proof that notifications arrive, not counters of our own actions.

Every PROBE_INTERVAL_MINUTES the portal sends a tagged mail (subject "[Fleet probe] <tag>")
from PROBE_SENDER to PROBE_MAILBOX, a monitored mailbox (and, when the Teams sender is
connected and PROBE_CHAT_ID names a chat, a tagged message to that chat), and measures each
stage:

1. send accepted: Graph answered sendMail with 202;
2. notification received: the receiver stored a notification for that message;
3. delta synced: a delta round of the mailbox saw it.

A probe seen by delta whose notification has not arrived within
PROBE_NOTIFICATION_TIMEOUT_MINUTES is "no notification" (the probe_notifications_missing
alert); one Graph refused to send is "failed" (probe_sending_failing). Measured probes are
deleted in Graph; their deletion notifications are recognised here and ignored. Probe mail is
never an OutboundMessage, never a SyncedItem, never a feed event, and the Probe rows are
pruned with the notification inbox.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations import graph
from integrations.graph.errors import GraphError, NotFound
from integrations.microsoft import teams_sender
from integrations.microsoft.models import MonitoredUser, NotificationInbox, Probe
from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record
from portal.jobs.runner import enqueue

logger = logging.getLogger(__name__)

SUBJECT_PREFIX = "[Fleet probe] "
_TAG = re.compile(r"\[Fleet probe\] ([0-9a-f]{32})")
JOB_TYPE = "graph.probe_tick"


class ProbeNotSetUp(Exception):
    """The probe cannot run (the message says what to set up)."""


def mailbox() -> str:
    return settings.PROBE_MAILBOX.strip().lower()


def sender() -> str:
    return (settings.PROBE_SENDER.strip() or settings.PROBE_MAILBOX.strip()).lower()


def setup_problem() -> str:
    """What is missing before the probe can run ("" = it is set up)."""
    if not settings.PROBE_ENABLED:
        return "The probe is switched off (PROBE_ENABLED=false)."
    if not mailbox():
        return "No probe mailbox is named (PROBE_MAILBOX)."
    user = MonitoredUser.objects.lookup(mailbox())
    if user is None or not user.is_active or not user.watch_messages:
        return f"The probe mailbox {mailbox()} is not a monitored user with its inbox watched."
    return ""


def monitored_user() -> MonitoredUser | None:
    return MonitoredUser.objects.lookup(mailbox()) if mailbox() else None


def enqueue_tick() -> int:
    """Schedule entry (every minute): a worker sends and measures (no job while the probe is
    not set up)."""
    if setup_problem():
        return 0
    return enqueue(JOB_TYPE, {}, created_by="schedule:probe").pk


def teams_chat() -> str:
    """The chat the Teams probe posts to: PROBE_CHAT_ID while a Teams sender is connected
    ("" = no Teams probe)."""
    chat = settings.PROBE_CHAT_ID.strip()
    return chat if chat and teams_sender.current_delegated_account() is not None else ""


def _new_probes(created_by: str, slot: int | None = None) -> list[Probe]:
    """One probe per channel in use; none for a channel whose slot has its probe already."""
    wanted = [(Probe.Channel.MAIL, sender(), mailbox())]
    if teams_chat():
        account = teams_sender.current_delegated_account()
        wanted.append((Probe.Channel.TEAMS_CHAT, account.upn if account else "", teams_chat()))
    made = []
    for channel, source, target in wanted:
        try:
            with transaction.atomic():
                made.append(
                    Probe.objects.create(
                        slot=slot,
                        channel=channel,
                        tag=uuid.uuid4().hex,
                        sender=source,
                        mailbox=target,
                        created_by=created_by,
                    )
                )
        except IntegrityError:
            continue  # this slot's probe exists
    return made


def run_now(actor: Actor) -> list[Probe]:
    """An operator sends a probe at once (after a fix, to prove it worked); audited."""
    require(actor, "verify_integration", action="probe.run", target_type="probe")
    problem = setup_problem()
    if problem:
        raise ProbeNotSetUp(problem)
    with transaction.atomic():
        probes = _new_probes(actor.name)
        ids = [probe.pk for probe in probes]
        record("probe.run", actor=actor, target_type="probe", target_id=ids[0], params={"ids": ids})
        enqueue(JOB_TYPE, {"probes": ids}, created_by=actor.name)
    return probes


def tick(probe_ids: list[int] | None = None, now: datetime | None = None) -> str:
    """Measure the open probes, then send the ones that are due (or `probe_ids`). Safe to
    run twice: a slot's probes are created once, a probe is sent only from `sending`."""
    if setup_problem():
        return "not set up"
    now = now or timezone.now()
    measure(now)
    if probe_ids is not None:
        probes = list(Probe.objects.filter(pk__in=probe_ids, status=Probe.Status.SENDING))
    else:
        slot = int(now.timestamp() // (settings.PROBE_INTERVAL_MINUTES * 60))
        probes = _new_probes("schedule:probe", slot)
    for probe in probes:
        send(probe)
    return "ok"


def send(probe: Probe) -> None:
    """Send one probe, not through the outbound queue: probe traffic is never a Fleet
    message."""
    claimed = Probe.objects.filter(pk=probe.pk, status=Probe.Status.SENDING).update(
        started_at=timezone.now()
    )
    if not claimed:
        return
    try:
        graph_id = (
            _send_teams(probe) if probe.channel == Probe.Channel.TEAMS_CHAT else _send_mail(probe)
        )
    except GraphError as exc:
        Probe.objects.filter(pk=probe.pk).update(
            status=Probe.Status.FAILED, error=str(exc)[:2000], finished_at=timezone.now()
        )
        logger.warning("Probe %s could not be sent: %s", probe.tag, exc)
        return
    Probe.objects.filter(pk=probe.pk).update(
        status=Probe.Status.SENT, sent_at=timezone.now(), graph_message_id=graph_id
    )


def _send_teams(probe: Probe) -> str:
    """POST the tagged message to the probe chat as the Teams sender; Graph answers its id."""
    posted = graph.post(
        f"/chats/{probe.mailbox}/messages",
        json={"body": {"contentType": "text", "content": f"{SUBJECT_PREFIX}{probe.tag}"}},
        token_kind="delegated",
    )
    return str((posted or {}).get("id") or "")[:255]


def _send_mail(probe: Probe) -> str:
    """sendMail answers no id: delta finds the message by its tag."""
    message = {
        "subject": f"{SUBJECT_PREFIX}{probe.tag}",
        "body": {
            "contentType": "text",
            "content": "End-to-end probe of the Fleet Graph Portal; deleted once measured.",
        },
        "toRecipients": [{"emailAddress": {"address": probe.mailbox}}],
    }
    graph.post(
        f"/users/{probe.sender}/sendMail",
        json={"message": message, "saveToSentItems": False},
    )
    return ""


def measure(now: datetime) -> None:
    """Note notifications that arrived, decide the probes whose time is up, and delete the
    decided probes' messages in Graph."""
    timeout = timedelta(minutes=settings.PROBE_NOTIFICATION_TIMEOUT_MINUTES)
    for probe in Probe.objects.filter(status=Probe.Status.SENT):
        fields: dict[str, object] = {}
        notified = probe.notified_at or _notification_time(probe)
        if notified and not probe.notified_at:
            fields["notified_at"] = notified
        if probe.synced_at and notified:
            fields.update(status=Probe.Status.MEASURED, finished_at=now)
        elif probe.sent_at and now - probe.sent_at > timeout:
            status = Probe.Status.NO_NOTIFICATION if probe.synced_at else Probe.Status.NOT_SYNCED
            fields.update(status=status, finished_at=now)
        if fields:
            Probe.objects.filter(pk=probe.pk, status=Probe.Status.SENT).update(**fields)
    for probe in (
        Probe.objects.finished().filter(deleted_at__isnull=True).exclude(graph_message_id="")
    ):
        try:
            _delete(probe)
        except NotFound:
            pass
        except GraphError as exc:
            logger.info("Probe %s: its message could not be deleted yet: %s", probe.tag, exc)
            continue
        Probe.objects.filter(pk=probe.pk).update(deleted_at=now)


def _delete(probe: Probe) -> None:
    if probe.channel == Probe.Channel.TEAMS_CHAT:
        # Teams keeps a deleted message (content gone): "chatMessage: softDelete".
        graph.post(
            f"/users/{probe.sender}/chats/{probe.mailbox}/messages/{probe.graph_message_id}"
            "/softDelete",
            token_kind="delegated",
        )
    else:
        graph.delete(f"/users/{probe.mailbox}/messages/{probe.graph_message_id}")


def _notification_time(probe: Probe) -> datetime | None:
    if not probe.graph_message_id:
        return None
    return (
        NotificationInbox.objects.filter(resource_id=probe.graph_message_id)
        .exclude(change_type="deleted")
        .order_by("received_at")
        .values_list("received_at", flat=True)
        .first()
    )


# --------------------------------------------------------------------------- recognising


def _text(item: dict) -> str:
    """Where a probe's tag is: a mail's subject, a chat message's body."""
    body = item.get("body")
    content = body.get("content") if isinstance(body, dict) else ""
    return f"{item.get('subject') or ''} {content or ''}"


def take_probe_items(items: list[dict]) -> list[dict]:
    """Delta items that are probe traffic (a tagged mail or chat message of a known probe,
    or a later change to one): noted as synced (the first time) and returned, to be left
    out of the sync (no SyncedItem, no event). A page without a tag or a removal costs no
    query."""
    tags: dict[str, str] = {}
    changed: list[str] = []
    for item in items:
        if not isinstance(item, dict) or not item.get("id"):
            continue
        match = _TAG.search(_text(item))
        if match:
            tags[match.group(1)] = str(item["id"])
        elif "@removed" in item or item.get("deletedDateTime"):
            changed.append(str(item["id"]))
    if not tags and not changed:
        return []
    taken = set(probe_message_ids(changed))
    now = timezone.now()
    for probe in Probe.objects.filter(tag__in=list(tags)):
        graph_id = tags[probe.tag]
        taken.add(graph_id)
        Probe.objects.filter(pk=probe.pk, synced_at__isnull=True).update(
            synced_at=now, graph_message_id=graph_id
        )
    return [item for item in items if isinstance(item, dict) and item.get("id") in taken]


def probe_message_ids(resource_ids: Iterable[str]) -> set[str]:
    """Which of these message ids are probe mail (their notifications are probe traffic)."""
    wanted = [rid for rid in resource_ids if rid]
    if not wanted:
        return set()
    return set(
        Probe.objects.filter(graph_message_id__in=wanted).values_list("graph_message_id", flat=True)
    )
