"""Monitored users: add (or re-activate) one by UPN or Graph id, resolve it in Graph, stop
monitoring it. Its subscriptions follow at the next setup or maintenance
(integrations/microsoft/subscriptions.py)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from integrations import graph
from integrations.graph.errors import GraphError
from integrations.microsoft.models import MonitoredUser
from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record


def resolve_user(user: MonitoredUser) -> bool:
    """Look the user up in Graph and store its id, UPN and name. Returns success."""
    try:
        data = graph.get(
            f"/users/{user.identifier}",
            params={"$select": "id,userPrincipalName,displayName"},
            mailbox="",
        )
    except GraphError as exc:
        MonitoredUser.objects.filter(pk=user.pk).update(last_error=str(exc)[:2000])
        user.last_error = str(exc)
        if exc.transient:
            raise
        return False
    user.graph_id = str(data.get("id") or "")
    user.upn = str(data.get("userPrincipalName") or "")
    user.display_name = str(data.get("displayName") or "")
    user.resolved_at = timezone.now()
    user.last_error = ""
    MonitoredUser.objects.filter(pk=user.pk).update(
        graph_id=user.graph_id,
        upn=user.upn,
        display_name=user.display_name,
        resolved_at=user.resolved_at,
        last_error="",
    )
    return bool(user.graph_id)


def add_monitored_user(
    actor: Actor,
    identifier: str,
    *,
    messages: bool = True,
    chat_messages: bool = True,
    resolve: bool = True,
) -> MonitoredUser:
    """Add (or re-activate) a monitored user by UPN or id; resolves its Graph id.

    A transient Graph failure keeps the user unresolved (setup_webhooks resolves it later);
    a user Graph does not know is refused.
    """
    identifier = identifier.strip()
    require(
        actor,
        "manage_monitored_users",
        action="monitored_user.add",
        target_type="monitored_user",
        target_id=identifier,
    )
    if not identifier:
        raise ValueError("Enter a user principal name or a Graph user id.")
    with transaction.atomic():
        user, created = MonitoredUser.objects.update_or_create(
            identifier=identifier,
            defaults={
                "watch_messages": messages,
                "watch_chat_messages": chat_messages,
                "is_active": True,
            },
            create_defaults={
                "watch_messages": messages,
                "watch_chat_messages": chat_messages,
                "created_by": actor.name[:150],
            },
        )
        record(
            "monitored_user.add",
            actor=actor,
            target_type="monitored_user",
            target_id=user.pk,
            params={"identifier": identifier, "kinds": user.kinds, "created": created},
        )
    if resolve:
        try:
            ok = resolve_user(user)
        except GraphError:
            ok = True  # transient: left unresolved for setup_webhooks
        if not ok:
            raise ValueError(f"Graph does not know the user {identifier!r}: {user.last_error}")
    return user


def remove_monitored_user(actor: Actor, user_id: int) -> None:
    """Stop monitoring (the next setup/cleanup deletes its subscriptions)."""
    require(
        actor,
        "manage_monitored_users",
        action="monitored_user.remove",
        target_type="monitored_user",
        target_id=user_id,
    )
    with transaction.atomic():
        MonitoredUser.objects.filter(pk=user_id).update(is_active=False)
        record(
            "monitored_user.remove", actor=actor, target_type="monitored_user", target_id=user_id
        )
