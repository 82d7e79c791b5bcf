"""Audited actions in words ("retried a job", not `job.retry`), for screens that tell who did
what (the dashboard's chart markers, the audit log's Action column beside the machine name,
which stays in the record, the export and the filters)."""

from __future__ import annotations

ACTION_WORDS = {
    "access.clear_lockouts": "cleared sign-in lockouts",
    "alert.acknowledge": "acknowledged an alert",
    "alert.snooze": "snoozed an alert",
    "api_token.create": "created an API token",
    "api_token.revoke": "revoked an API token",
    "approval.approve": "approved a request",
    "approval.break_glass": "used break-glass",
    "approval.policy": "changed an approval policy",
    "approval.reject": "rejected a request",
    "approval.request": "asked for approval",
    "approval.review": "reviewed a request",
    "approval.run": "ran an approved action",
    "approval.withdraw": "withdrew a request",
    "bulk.cancel": "cancelled a bulk operation",
    "credential.activate": "activated a credential",
    "credential.add": "added a credential",
    "credential.bootstrap": "set up the first credential",
    "credential.retire": "retired a credential",
    "credential.rollback": "rolled back a credential",
    "event_delivery.replay": "replayed an event delivery",
    "event_endpoint.create": "added an event endpoint",
    "event_endpoint.delete": "deleted an event endpoint",
    "event_endpoint.disable": "disabled an event endpoint",
    "event_endpoint.replay": "replayed an event endpoint's events",
    "event_endpoint.rotate_secret": "rotated an event endpoint's secret",
    "event_endpoint.test": "sent a test event",
    "inbox.pause": "paused the notification inbox",
    "inbox.resume": "resumed the notification inbox",
    "job.discard": "discarded a job",
    "job.retry": "retried a job",
    "job.retry_all": "retried dead jobs",
    "jobs.pause": "paused the job queue",
    "jobs.resume": "resumed the job queue",
    "message.cancel": "cancelled a message",
    "message.resend": "resent a message",
    "message.send": "sent a message",
    "message.send_test": "sent a test message",
    "monitored_user.add": "started monitoring a user",
    "monitored_user.change": "changed a monitored user",
    "monitored_user.remove": "stopped monitoring a user",
    "probe.run": "ran the probe",
    "recovery.finish": "finished a guided recovery",
    "recovery.start": "started a guided recovery",
    "recovery.step": "ran a recovery step",
    "service_client.create": "created a service client",
    "service_client.revoke": "revoked a service client",
    "service_client.rotate": "rotated a service client's token",
    "settings.change": "changed a setting",
    "subscription.bulk_renew": "renewed subscriptions",
    "subscription.delete": "deleted a subscription",
    "subscription.recreate": "recreated a subscription",
    "subscription.renew": "renewed a subscription",
    "sync.delta": "started a delta sync",
    "sync.full": "started a full sync",
    "sync.reset": "reset a sync state",
    "teams_sender.connect": "connected the Teams sender",
    "teams_sender.disconnect": "disconnected the Teams sender",
    "user.create": "created a user",
    "user.deactivate": "deactivated a user",
    "user.mfa_enrol_link": "made an MFA enrolment link",
    "user.reset_mfa": "reset a user's MFA",
    "user.set_password": "set a user's password",
    "user.set_role": "changed a user's role",
    "webhooks.cleanup": "cleaned up subscriptions",
    "webhooks.setup": "set up subscriptions",
    "event_endpoint.pause": "paused an event endpoint",
    "event_endpoint.resume": "resumed an event endpoint",
    "graph.mailbox_backoff": "backed off a mailbox",
    "jobs.retry_all": "retried dead jobs",
    "subscriptions.bulk_renew": "renewed subscriptions",
    "tenant.connect": "connected a tenant",
}
# Audited reads and sign-ins (portal.audit.models.NOT_CHANGES): the audit log names them too,
# but they change nothing, so no chart marks them.
READ_WORDS = {
    "access.view": "opened a page",
    "api.call": "called the API",
    "approval.secret_shown": "was shown an approved secret",
    "audit.export": "exported the audit log",
    "auth.break_glass": "signed in with break-glass",
    "auth.lockout": "was locked out of signing in",
    "auth.login": "signed in",
    "auth.logout": "signed out",
    "auth.mfa": "passed the second factor",
    "auth.mfa_enrol_link": "used a second-factor set-up link",
    "auth.mfa_enroll": "set up a second factor",
    "auth.sso": "signed in with Microsoft",
    "auth.sso_recheck": "was re-checked with Microsoft",
    "credential.verify": "verified a credential",
    "integration.verify": "ran the integration checks",
    "preference.time_zone": "chose a time zone",
    "sync.diagnose": "diagnosed a sync",
    "webhooks.compare": "compared subscriptions with Graph",
}


def action_words(action: str) -> str:
    """'job.retry' → 'retried a job'; an action without words reads 'job retry'."""
    return (
        ACTION_WORDS.get(action)
        or READ_WORDS.get(action)
        or action.replace(".", " ").replace("_", " ")
    )


def actions_described_by(text: str) -> list[str]:
    """The actions whose words contain `text` ("paused" → jobs.pause, inbox.pause…), so the
    audit log's filter finds an action by what the screen says as well as by its name."""
    needle = text.strip().lower()
    if not needle:
        return []
    every = {**ACTION_WORDS, **READ_WORDS}
    return sorted(action for action, words in every.items() if needle in words.lower())
