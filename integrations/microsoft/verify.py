"""The integration checklist behind `manage.py verify_integration` and the console button.

Each check returns a CheckResult and is bounded: HTTP calls run under `http.timeout_cap`,
the worker ping polls until a deadline, and any unexpected exception becomes a failed check
rather than a crash, so the command cannot hang or die half-way. Checks that need a token
report "skipped" (failed) when the token check failed, instead of repeating its error.

One module, over 600 lines, on purpose: it is the checklist, a dozen short checks in the order
CHECKS runs them, each bounded the same way by `run_checks`; one file per check would scatter
a list an operator reads top to bottom.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldError
from django.db import transaction
from django.db.models import Min
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django_q.conf import Conf

from integrations import graph
from integrations.graph import auth, http
from integrations.graph.errors import GraphError, TokenError
from integrations.graph.kinds import parse_graph_datetime
from integrations.microsoft import teams_sender
from integrations.microsoft.active_credential import active_credential, client_credential
from integrations.microsoft.models import Credential, MonitoredUser
from integrations.microsoft.subscriptions import webhook_url
from portal.access.authz import require
from portal.audit.services import record
from portal.jobs.liveness import ping_workers

logger = logging.getLogger("integrations.microsoft.verify")


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    duration_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Context:
    timeout: float
    claims: dict[str, Any] | None = None
    token_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- checks


def check_configuration(ctx: _Context) -> CheckResult:
    problems = [
        f"{name} is not set"
        for name in ("MICROSOFT_TENANT_ID", "MICROSOFT_CLIENT_ID")
        if not getattr(settings, name)
    ]
    for name in ("MICROSOFT_AUTHORITY_HOST", "MICROSOFT_GRAPH_URL"):
        if urlsplit(getattr(settings, name)).scheme != "https":
            problems.append(f"{name} must be an https URL")
    active = Credential.objects.filter(state=Credential.State.ACTIVE).first()
    has_active = active is not None
    if active is not None and active.configuration_mismatch():
        problems.append(active.configuration_mismatch())
    if not has_active and not (
        settings.MICROSOFT_CLIENT_SECRET or settings.MICROSOFT_CLIENT_ASSERTION_FILE
    ):
        problems.append(
            "no credential (set MICROSOFT_CLIENT_SECRET or MICROSOFT_CLIENT_ASSERTION_FILE, or "
            "add a secret or certificate to the credential store)"
        )
    if not settings.FIELD_ENCRYPTION_KEYS:
        problems.append("FIELD_ENCRYPTION_KEYS is empty")
    if problems:
        return CheckResult("Configuration", False, "; ".join(problems))
    if active is not None:
        source = f"{active.get_kind_display().lower()} from the credential store"
        if active.kind == Credential.Kind.CERTIFICATE:
            source += f" (thumbprint {active.thumbprint})"
    elif settings.MICROSOFT_CLIENT_ASSERTION_FILE:
        source = "workload identity from MICROSOFT_CLIENT_ASSERTION_FILE (bootstraps the store)"
    else:
        source = "secret from MICROSOFT_CLIENT_SECRET (bootstraps the store)"
    return CheckResult(
        "Configuration",
        True,
        f"tenant {settings.MICROSOFT_TENANT_ID}, client "
        f"{settings.MICROSOFT_CLIENT_ID}, {source}, Graph at "
        f"{settings.MICROSOFT_GRAPH_URL}",
    )


def check_token(ctx: _Context) -> CheckResult:
    try:
        credential = active_credential()
        credential.refuse_if_foreign()
        # A fresh MSAL app: MSAL caches identical 400 answers for 60 s per app, so the
        # process-wide one could report a fixed problem as still broken.
        result = auth.acquire_with(client_credential(credential))
    except TokenError as exc:
        ctx.token_error = exc.message
        return CheckResult("Token acquisition", False, exc.message)
    ctx.claims = auth.token_claims(result["access_token"])
    roles = sorted(ctx.claims.get("roles") or [])
    if not ctx.claims:
        return CheckResult(
            "Token acquisition", True, "token issued (not a JWT: its roles cannot be shown)"
        )
    return CheckResult(
        "Token acquisition", True, f"token issued; roles: {', '.join(roles) if roles else '(none)'}"
    )


def check_graph_reachable(ctx: _Context) -> CheckResult:
    if ctx.token_error:
        return CheckResult("Graph reachable", False, "skipped: no token")
    try:
        response = graph.request("GET", "/users", params={"$top": "1"}, max_retries=0)
    except GraphError as exc:
        return CheckResult("Graph reachable", False, str(exc))
    users = (response.body or {}).get("value", []) if isinstance(response.body, dict) else []
    return CheckResult(
        "Graph reachable",
        True,
        f"GET /users?$top=1 → {response.status} ({len(users)} user returned)",
    )


@dataclass(frozen=True)
class Permission:
    """An application permission the portal uses, the higher ones that include it (Entra
    grants no implied roles, so a token carries only what was consented), and what breaks
    without it (docs/real-tenant.md lists the same)."""

    name: str
    satisfied_by: tuple[str, ...]
    breaks: str


PERMISSIONS = {
    p.name.lower(): p
    for p in (
        Permission(
            "User.Read.All",
            ("User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"),
            "monitored users cannot be looked up (adding one, connect_tenant "
            "--keep-monitored-users)",
        ),
        Permission(
            "Mail.ReadBasic.All",
            ("Mail.Read", "Mail.ReadWrite"),
            "inbox subscriptions and mail delta sync fail",
        ),
        Permission(
            "Mail.Read", ("Mail.ReadWrite",), "inbox subscriptions and mail delta sync fail"
        ),
        Permission(
            "Mail.ReadWrite",
            (),
            "mail sync and sending mail as a draft (message id, the duplicate check after "
            "a crash) fail",
        ),
        Permission("Mail.Send", (), "e-mails and e-mail alerts cannot be sent"),
        Permission(
            "Chat.Read.All",
            ("Chat.ReadWrite.All",),
            "Teams chat subscriptions and chat delta sync fail",
        ),
        Permission("ChannelMessage.Read.All", (), "channel messages cannot be read back"),
    )
}

# What the Teams sender's delegated scopes are for (the portal asks for all of them).
DELEGATED_PERMISSIONS = {
    p.name.lower(): p
    for p in (
        Permission("ChatMessage.Send", ("Chat.ReadWrite",), "Teams chat messages cannot be sent"),
        Permission("ChannelMessage.Send", (), "Teams channel messages cannot be sent"),
        Permission(
            "Chat.Create",
            ("Chat.ReadWrite",),
            "Teams messages to a person (toUser) cannot open the one-to-one chat",
        ),
        Permission("User.Read", (), "the Teams sender cannot sign in"),
    )
}


def delegated_scope_problem() -> str:
    """What the connected Teams sender's token lacks of the delegated scopes ("" = nothing, or
    no sender connected), read from the scopes actually granted (the token's scp claim)."""
    if teams_sender.current_delegated_account() is None:
        return ""
    wanted = [DELEGATED_PERMISSIONS[n.lower()] for n in teams_sender.DELEGATED_SCOPES]
    try:
        # A refresh, not the cached token: consent withdrawn since shows up now.
        token = teams_sender.delegated_token(force_refresh=True)
    except TokenError as exc:
        if exc.aadsts != 65001:
            return f"the Teams sender's delegated scopes were not checked: {exc.message}"
        # Entra refuses the whole refresh when one asked-for scope lacks consent; its message
        # may name the scope (the emulator's does), else every one is a suspect.
        missing = [p for p in wanted if f"/{p.name.lower()}" in exc.message.lower()] or wanted
    else:
        granted = {s.lower() for s in str(auth.token_claims(token).get("scp") or "").split()}
        missing = [
            p for p in wanted if not any(n.lower() in granted for n in (p.name, *p.satisfied_by))
        ]
    if not missing:
        return ""
    return (
        "the Teams sender lacks delegated permission(s): "
        + "; ".join(f"{p.name} ({p.breaks})" for p in missing)
        + " — add them (API permissions → Delegated), grant admin consent and reconnect "
        "the Teams sender"
    )


def permission_satisfied(name: str, granted: set[str]) -> bool:
    """`granted` lower-cased; a higher permission satisfies a lower one."""
    known = PERMISSIONS.get(name.lower())
    names = (name, *(known.satisfied_by if known else ()))
    return any(n.lower() in granted for n in names)


def check_permissions(ctx: _Context) -> CheckResult:
    if ctx.claims is None:
        return CheckResult("Required permissions", False, "skipped: no token")
    required = list(settings.GRAPH_REQUIRED_ROLES)
    granted = {str(role).lower() for role in ctx.claims.get("roles") or []}
    missing = [role for role in required if not permission_satisfied(role, granted)]
    if missing:
        named = "; ".join(
            f"{role} ({PERMISSIONS[role.lower()].breaks})" if role.lower() in PERMISSIONS else role
            for role in missing
        )
        return CheckResult(
            "Required permissions",
            False,
            f"missing application permission(s): {named} — add them in the app "
            "registration (API permissions → Application) and grant admin "
            "consent",
        )
    delegated = delegated_scope_problem()
    if delegated.startswith("the Teams sender lacks"):
        return CheckResult("Required permissions", False, delegated)
    detail = f"present: {', '.join(required)}"
    if delegated:
        detail += f"; {delegated}"
    # The crash-retry of a Teams post looks for the earlier post with the app's token
    # (messaging/teams.py), so it is the application permission that matters, not a delegated one.
    if teams_sender.current_delegated_account() is not None and not permission_satisfied(
        "ChannelMessage.Read.All", granted
    ):
        detail += (
            "; warning: the app lacks the application permission ChannelMessage.Read.All, "
            "so after a crash mid-send a channel post cannot be looked for and a retry "
            "may post it twice"
        )
    return CheckResult("Required permissions", True, detail)


def check_teams_probe(ctx: _Context) -> CheckResult:
    """One getAllMessages delta page ($top=1) for a monitored user: tells Microsoft's Teams
    protected-API approval (needed for application-only chat reads) from other failures."""

    name = "Teams chat read"
    if ctx.token_error:
        return CheckResult(name, False, "skipped: no token")
    user = (
        MonitoredUser.objects.filter(is_active=True, watch_chat_messages=True)
        .exclude(graph_id="")
        .order_by("pk")
        .first()
    )
    if user is None:
        return CheckResult(name, True, "skipped: no monitored user watches Teams chats")
    try:
        graph.request(
            "GET",
            f"/users/{user.graph_id}/chats/getAllMessages/delta",
            params={"$top": "1"},
            max_retries=0,
        )
    except GraphError as exc:
        if exc.protected_api_refused:
            return CheckResult(
                name,
                False,
                f"protected API not approved ({exc.status} {exc.code}): request "
                "access to the Teams protected APIs for this app "
                "(https://aka.ms/teams-protected-apis; docs/real-tenant.md)",
            )
        return CheckResult(name, False, f"getAllMessages delta for {user} failed: {exc}")
    return CheckResult(name, True, f"getAllMessages delta for {user} answered")


def check_subscriptions(ctx: _Context) -> CheckResult:
    """Count, soonest expiry, expired and failed subscriptions.

    A `Subscription.health_summary() -> (ok, detail)` classmethod, when the subscription
    manager defines one, replaces this generic summary.
    """
    try:
        model = apps.get_model("microsoft", "Subscription")
    except LookupError:
        return CheckResult(
            "Subscriptions",
            True,
            "no subscriptions yet (the subscription manager is not installed)",
        )
    summary = getattr(model, "health_summary", None)
    if summary is not None:
        ok, detail = summary()
        return CheckResult("Subscriptions", bool(ok), str(detail))
    try:
        return _generic_subscription_summary(model)
    except FieldError:
        count = model.objects.count()
        return CheckResult("Subscriptions", True, f"{count} subscription{pluralize(count)}")


def _generic_subscription_summary(model: Any) -> CheckResult:
    now = timezone.now()
    active = model.objects.filter(state="active")
    total = model.objects.count()
    if total == 0:
        return CheckResult("Subscriptions", True, "no subscriptions yet")
    count = active.count()
    expired = active.filter(expiration__lte=now).count()
    # A replaced row is history; only a subscription still missing in Graph is broken.
    broken = model.objects.filter(state="failed").count() + model.objects.missing().count()
    soonest = active.filter(expiration__gt=now).aggregate(soonest=Min("expiration"))["soonest"]
    detail = f"{count} active"
    if soonest is not None:
        hours = (soonest - now).total_seconds() / 3600
        detail += f", soonest expiry in {hours:.1f} h ({soonest:%Y-%m-%d %H:%M} UTC)"
    detail += f", {expired} expired, {broken} failed/missing in Graph"
    return CheckResult("Subscriptions", expired == 0 and broken == 0, detail)


def webhook_validation_url() -> str:
    explicit = settings.WEBHOOK_VALIDATION_URL
    if explicit:
        return explicit
    return settings.PUBLIC_BASE_URL.rstrip("/") + "/api/webhooks/mail"


def check_webhook(ctx: _Context) -> CheckResult:
    """The validation round trip Graph does on subscription create ("Receive change notifications
    through webhooks": notification endpoint validation)."""
    url = webhook_validation_url()
    token = f"verify {secrets.token_urlsafe(12)}"  # a space, like Graph's tokens
    client = requests.Session()
    client.trust_env = False
    try:
        response = client.get(
            url,
            params={"validationToken": token},
            timeout=(min(5.0, ctx.timeout), ctx.timeout),
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        return CheckResult(
            "Webhook endpoint",
            False,
            f"webhook receiver not reachable at {url} ({type(exc).__name__}): "
            "is PUBLIC_BASE_URL right and the portal running?",
        )
    finally:
        client.close()
    content_type = response.headers.get("Content-Type", "")
    if response.status_code == 404:
        return CheckResult(
            "Webhook endpoint", False, f"webhook receiver not installed: {url} answered 404"
        )
    if response.status_code != 200 or not content_type.startswith("text/plain"):
        return CheckResult(
            "Webhook endpoint",
            False,
            f"webhook receiver not reachable/not installed: {url} answered "
            f"{response.status_code} {content_type or 'no content type'} "
            "(Graph needs 200 text/plain with the token echoed)",
        )
    if response.text != token:
        return CheckResult(
            "Webhook endpoint",
            False,
            f"{url} answered 200 but did not echo the validation token exactly",
        )
    return CheckResult("Webhook endpoint", True, f"{url} echoed the validation token")


MAX_CLOCK_SKEW_SECONDS = 300
SECRET_EXPIRY_WARN_DAYS = 30


def _address_is_public(host: str) -> bool:
    """Every address `host` resolves to is a public one (not loopback, private, link-local)."""
    try:
        # For a host name the resolver answers IPv4/IPv6 addresses, each given as text first.
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return True  # cannot tell here; the round trip in "Webhook endpoint" will say
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global:
            return False
    return True


def check_webhook_url(ctx: _Context) -> CheckResult:
    """Graph only calls public https URLs ("Receive change notifications through webhooks"); the
    emulator calls anything."""

    name = "Webhook URL"
    url = webhook_url("mail").rsplit("/mail", 1)[0] + "/*"
    if settings.USING_EMULATOR:
        return CheckResult(name, True, f"{url} (not checked: the emulator calls any URL)")
    parts = urlsplit(url)
    if parts.scheme != "https":
        return CheckResult(
            name,
            False,
            f"{url} must be https: Graph refuses other notification URLs (set PUBLIC_BASE_URL)",
        )
    if not parts.hostname or not _address_is_public(parts.hostname):
        return CheckResult(
            name,
            False,
            f"{url} is loopback or private: Graph cannot reach it "
            "(set PUBLIC_BASE_URL to the public address)",
        )
    return CheckResult(name, True, f"{url} is public https")


def check_clock(ctx: _Context) -> CheckResult:
    """Tokens and subscriptions carry times: more than 5 minutes of skew with the identity
    platform makes tokens look expired or not yet valid."""

    name = "Clock"
    if settings.USING_EMULATOR:
        return CheckResult(name, True, "not checked: the emulator runs on this machine")
    session = http.build_session()
    try:
        response = session.get(
            f"{auth.authority()}/v2.0/.well-known/openid-configuration",
            timeout=(min(5.0, ctx.timeout), ctx.timeout),
        )
    except requests.RequestException as exc:
        return CheckResult(name, False, f"identity platform not reachable ({type(exc).__name__})")
    finally:
        session.close()
    try:
        theirs = parsedate_to_datetime(response.headers.get("Date", ""))
    except (TypeError, ValueError):
        return CheckResult(name, False, "the identity platform sent no usable Date header")
    skew = (timezone.now() - theirs).total_seconds()
    detail = f"{abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the identity platform"
    if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
        return CheckResult(
            name,
            False,
            f"this machine's clock is {detail} (more than "
            f"{MAX_CLOCK_SKEW_SECONDS // 60} minutes): fix NTP",
        )
    return CheckResult(name, True, detail)


def _expiry_from_graph(secret: str) -> datetime | None:
    """The secret's endDateTime from Graph's application object (needs Application.Read.All;
    None when it cannot be read). Entra keeps the first 3 characters as the `hint`."""

    try:
        body = graph.request(
            "GET",
            f"/applications(appId='{settings.MICROSOFT_CLIENT_ID}')",
            params={"$select": "passwordCredentials"},
            max_retries=0,
        ).body
    except GraphError:
        return None
    for entry in (body or {}).get("passwordCredentials") or []:
        if entry.get("hint") and secret.startswith(str(entry["hint"])):
            return parse_graph_datetime(entry.get("endDateTime"))
    return None


def check_secret_expiry(ctx: _Context) -> CheckResult:
    name = "Client secret expiry"
    credential = Credential.objects.filter(state=Credential.State.ACTIVE).first()
    if credential is None:
        return CheckResult(name, False, "no active client secret")
    if credential.kind == Credential.Kind.FEDERATED:
        return CheckResult(
            name, True, "workload identity: nothing to expire (the platform rotates the token)"
        )
    expires, source = None, ""
    if credential.kind == Credential.Kind.CERTIFICATE:
        expires, source = credential.expires_at, f"certificate {credential.thumbprint}"
    elif not settings.USING_EMULATOR and not ctx.token_error:
        expires, source = _expiry_from_graph(credential.secret_value()), "from Entra ID"
    if expires is None and credential.expires_at is not None:
        expires, source = credential.expires_at, "as entered"
    if expires is None:
        return CheckResult(
            name,
            True,
            f"…{credential.fingerprint}: expiry not recorded (enter "
            "it on the credentials page, or grant "
            "Application.Read.All so it can be read)",
        )
    days = (expires - timezone.now()).days
    detail = f"…{credential.fingerprint} expires {expires:%Y-%m-%d} ({days} days; {source})"
    if days < 0:
        return CheckResult(name, False, detail + ": rotate it now")
    if days < SECRET_EXPIRY_WARN_DAYS:
        detail += "; warning: rotate it soon"
    return CheckResult(name, True, detail)


def check_worker(ctx: _Context) -> CheckResult:
    """Queue a ping task and wait for a worker to answer it."""
    answered = ping_workers(ctx.timeout)
    if answered is not None:
        by, waited = answered
        how = " (Q_SYNC: ran inline, no worker involved)" if Conf.SYNC else ""
        return CheckResult("Worker alive", True, f"ping answered by {by} in {waited:.1f}s{how}")
    hint = (
        " (this ran inside a transaction: a worker cannot see the ping before it commits)"
        if transaction.get_connection().in_atomic_block
        else ""
    )
    return CheckResult(
        "Worker alive",
        False,
        f"no worker answered a ping within {ctx.timeout:g}s: is "
        f"`manage.py qcluster` running against this database?{hint}",
    )


CHECKS: list[Callable[[_Context], CheckResult]] = [
    check_configuration,
    check_token,
    check_clock,
    check_secret_expiry,
    check_graph_reachable,
    check_permissions,
    check_teams_probe,
    check_subscriptions,
    check_webhook_url,
    check_webhook,
    check_worker,
]


def add_check(check: Callable[[_Context], CheckResult]) -> None:
    """Add a check that another layer owns, run after the integration's own (once: the queue
    check, judged by the alert rules, is added by portal.alerts at start-up)."""
    if check not in CHECKS:
        CHECKS.append(check)


def run_checks(timeout: float = 10.0) -> list[CheckResult]:
    """Run every check in order; each is bounded by `timeout` seconds of network waiting."""
    ctx = _Context(timeout=float(timeout))
    results = []
    for check in CHECKS:
        started = time.monotonic()
        try:
            with http.timeout_cap(ctx.timeout):
                result = check(ctx)
        except Exception as exc:  # a broken check must not stop the others
            logger.exception("verify_integration check %s crashed", check.__name__)
            name = check.__name__.removeprefix("check_").replace("_", " ").capitalize()
            result = CheckResult(
                name, False, f"check crashed: {type(exc).__name__}: {str(exc)[:200]}"
            )
            if check is check_token:
                ctx.token_error = result.detail
        result.duration_ms = int((time.monotonic() - started) * 1000)
        results.append(result)
    return results


def verify_integration(actor: Any, *, timeout: float = 10.0) -> list[CheckResult]:
    """Role-checked, audited run of the checklist (console button and command)."""

    require(actor, "verify_integration", action="integration.verify", target_type="integration")
    results = run_checks(timeout=timeout)
    failed = [r.name for r in results if not r.ok]
    record(
        "integration.verify",
        actor=actor,
        target_type="integration",
        target_id=socket.gethostname()[:100],
        params={"failed": failed, "checks": len(results), "timeout": timeout},
        outcome="failure" if failed else "success",
        reason="; ".join(f"{r.name}: {r.detail}" for r in results if not r.ok)[:1900],
    )
    return results
