"""The integration's models, one module per concern; every model is imported here so Django
finds it and `from integrations.microsoft.models import X` names it.

Each figure the dashboard, the API, the alerts and /metrics show has one definition: a method
on its model's QuerySet (tests/portal/test_figures.py proves that every consumer reports the
same number for the same rows).
"""

from integrations.microsoft.models.credentials import Credential, DelegatedAccount
from integrations.microsoft.models.graph_calls import GraphCall, GraphCallFigures
from integrations.microsoft.models.notifications import (
    InboxDrainPause,
    NotificationAnswers,
    NotificationInbox,
    WebhookRejection,
)
from integrations.microsoft.models.outbound import (
    BudgetSlot,
    MailboxLease,
    OutboundMessage,
    SendBudget,
)
from integrations.microsoft.models.probe import Probe
from integrations.microsoft.models.subscriptions import (
    LifecycleEvent,
    MonitoredUser,
    ResourceKind,
    Subscription,
    TeamsChat,
)
from integrations.microsoft.models.sync import SyncedItem, SyncRun, SyncState

__all__ = [
    "BudgetSlot",
    "Credential",
    "DelegatedAccount",
    "GraphCall",
    "GraphCallFigures",
    "InboxDrainPause",
    "LifecycleEvent",
    "MailboxLease",
    "MonitoredUser",
    "NotificationAnswers",
    "NotificationInbox",
    "OutboundMessage",
    "Probe",
    "ResourceKind",
    "SendBudget",
    "Subscription",
    "SyncRun",
    "SyncState",
    "SyncedItem",
    "TeamsChat",
    "WebhookRejection",
]
