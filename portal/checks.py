"""System checks for configuration mistakes that would otherwise surface at 3 a.m."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from portal.audit.chain import configured_keys
from portal.audit.db_roles import role_problems
from portal.audit.stream import SinkError, parse_sink, reachability_problem, sink_problems


@register(Tags.compatibility)
def check_task_queue(app_configs: Any = None, **kwargs: Any) -> list:
    errors: list = []
    cluster: dict[str, Any] = settings.Q_CLUSTER or {}
    timeout, retry = cluster.get("timeout"), cluster.get("retry")
    if not timeout:
        errors.append(
            Error(
                "Q_CLUSTER has no timeout: a hung task would block its worker forever.",
                hint="Set Q_TIMEOUT (seconds).",
                id="portal.E001",
            )
        )
    elif retry is None or retry <= timeout:
        errors.append(
            Error(
                f"Q_CLUSTER retry ({retry}) must be greater than timeout ({timeout}); otherwise "
                "django-q2 delivers a task again while it is still running.",
                hint="Set Q_RETRY above Q_TIMEOUT.",
                id="portal.E002",
            )
        )
    orm_alias = cluster.get("orm")
    if orm_alias and orm_alias not in settings.DATABASES:
        errors.append(
            Error(
                f"Q_CLUSTER uses the ORM broker on database {orm_alias!r}, which is not "
                "configured.",
                id="portal.E003",
            )
        )
    if not orm_alias and not cluster.get("redis"):
        errors.append(Error("Q_CLUSTER names no broker (neither orm nor redis).", id="portal.E004"))
    if cluster.get("save_limit", 250) > 0:
        errors.append(
            Warning(
                "Q_CLUSTER save_limit > 0 prunes on every task and caps throughput near 70/s.",
                hint="Use 0 or -1; the Job table keeps the history.",
                id="portal.W001",
            )
        )
    return errors


@register(Tags.database)
def check_database_options(app_configs: Any = None, **kwargs: Any) -> list:
    errors: list = []
    db = settings.DATABASES.get("default", {})
    engine = db.get("ENGINE", "")
    if engine.endswith("sqlite3"):
        if db.get("OPTIONS", {}).get("transaction_mode") != "IMMEDIATE":
            errors.append(
                Error(
                    "SQLite must use transaction_mode IMMEDIATE: with deferred transactions the "
                    "worker loses results with 'database is locked'.",
                    id="portal.E010",
                )
            )
    elif engine.endswith("postgresql"):
        max_age = db.get("CONN_MAX_AGE") or 0
        if max_age is not None and max_age < 60:
            errors.append(
                Warning(
                    f"CONN_MAX_AGE is {max_age}; the ORM broker reconnects on every call below 60 "
                    "and runs 3-15 times slower.",
                    hint="Set DB_CONN_MAX_AGE to 60 or more.",
                    id="portal.W010",
                )
            )
    return errors


@register(Tags.security, deploy=True)
def check_encryption_keys(app_configs: Any = None, **kwargs: Any) -> list:
    if settings.FIELD_ENCRYPTION_KEYS:
        return []
    return [
        Error(
            "FIELD_ENCRYPTION_KEYS is empty: client secrets and token caches cannot be stored.",
            hint="Generate one with `python manage.py generate_encryption_key`.",
            id="portal.E020",
        )
    ]


@register(Tags.security, deploy=True)
def check_sso(app_configs: Any = None, **kwargs: Any) -> list:
    """Staff sign-in with Entra ID (docs/sso.md): what would let the wrong people in, or
    nobody."""

    problems: list = []
    if not settings.SSO_ENABLED:
        if settings.SSO_ONLY:
            problems.append(
                Warning(
                    "SSO_ONLY is on but SSO_ENABLED is off: passwords stay the only way in.",
                    id="portal.W041",
                )
            )
        return problems
    try:
        uuid.UUID(settings.SSO_TENANT_ID)
    except ValueError:
        problems.append(
            Error(
                f"SSO_TENANT_ID {settings.SSO_TENANT_ID!r} is not a tenant GUID: only that "
                "tenant's tokens may be accepted, and tokens name it by GUID (tid).",
                hint="Entra admin center → Overview → Tenant ID.",
                id="portal.E040",
            )
        )
    if urlsplit(settings.SSO_AUTHORITY_HOST).scheme != "https":
        problems.append(Error("SSO_AUTHORITY_HOST must be an https URL.", id="portal.E041"))
    if not settings.SSO_CLIENT_SECRET and settings.SSO_CLIENT_ID != settings.MICROSOFT_CLIENT_ID:
        problems.append(
            Error(
                "SSO_CLIENT_ID names its own registration but SSO_CLIENT_SECRET is empty.",
                id="portal.E042",
            )
        )
    redirect = urlsplit(settings.SSO_REDIRECT_URI) if settings.SSO_REDIRECT_URI else None
    if redirect is not None and redirect.scheme != "https":
        problems.append(
            Warning(
                "SSO_REDIRECT_URI is not https: authorization codes would travel in clear text.",
                id="portal.W042",
            )
        )
    if settings.SSO_ONLY and not settings.SSO_BREAK_GLASS_ACCOUNTS:
        problems.append(
            Warning(
                "SSO_ONLY is on and SSO_BREAK_GLASS_ACCOUNTS is empty: if "
                "Entra ID is unreachable nobody can sign in.",
                hint="Name one or two local admin accounts kept in a safe.",
                id="portal.W043",
            )
        )
    return problems


@register(Tags.security)
def check_audit_chain_key(app_configs: Any = None, **kwargs: Any) -> list:
    try:
        keys = configured_keys()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="portal.E031")]
    if keys:
        return []
    return [
        Error(
            "AUDIT_CHAIN_KEY is not set: the audit log's hash chain cannot be keyed, so anyone "
            "who can write the table could rewrite it undetected.",
            hint="Generate one with `python manage.py generate_audit_chain_key` and set "
            "AUDIT_CHAIN_KEY (or AUDIT_CHAIN_KEY_FILE).",
            id="portal.E030",
        )
    ]


@register(Tags.security, deploy=True)
def check_audit_database(app_configs: Any = None, **kwargs: Any) -> list:
    """What the database can do to protect the audit log (docs/security.md, "Audit log")."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine.endswith("sqlite3"):
        return [
            Warning(
                "The audit log is in SQLite: anyone who can write the database file can "
                "delete or rewrite audit events and checkpoints; the hash chain shows edits, "
                "but deleting the newest events together with the checkpoints shows only "
                "against a copy outside the database.",
                hint="Use PostgreSQL with a separate app role, and set AUDIT_CHECKPOINT_FILE "
                "(or ship the audit stream) to storage the portal's host cannot rewrite.",
                id="portal.W032",
            )
        ]
    if engine.endswith("postgresql") and not settings.DATABASE_APP_ROLE:
        return [
            Warning(
                "DATABASE_APP_ROLE is not set: the app probably runs as the role that owns "
                "the audit tables, which can disable their append-only triggers.",
                hint="Run migrations as the owner with DATABASE_APP_ROLE set, and the app as "
                "that role (docs/security.md, Audit log).",
                id="portal.W033",
            )
        ]
    return []


@register(Tags.database, deploy=True)
def check_audit_database_role(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list:
    """`check --deploy --database default`: the role the app connects as, asked directly."""
    problems: list = []
    for alias in databases or []:
        problems.extend(
            Warning(
                f"Database {alias!r}: {problem}; it can rewrite the audit log behind its triggers.",
                hint="Run the app as a role that neither owns the audit tables nor is a "
                "superuser (DATABASE_APP_ROLE; docs/security.md, Audit log).",
                id="portal.W034",
            )
            for problem in role_problems(alias)
        )
    return problems


@register(Tags.security)
def check_audit_stream(app_configs: Any = None, **kwargs: Any) -> list:
    """AUDIT_STREAM_SINKS: refused when wrong; a warning when a sink is down right now (its
    cursor keeps everything until it is back)."""
    problems: list = []
    for url in settings.AUDIT_STREAM_SINKS:
        try:
            sink = parse_sink(url)
        except SinkError as exc:
            problems.append(Error(str(exc), id="portal.E035"))
            continue
        wrong = sink_problems(sink)
        problems.extend(Error(problem, id="portal.E036") for problem in wrong)
        unreachable = "" if wrong else reachability_problem(sink)
        if unreachable:
            problems.append(
                Warning(
                    unreachable,
                    hint="Nothing is lost: the stream resumes from its cursor once the sink "
                    "answers. The dashboard and /metrics show how far behind it is.",
                    id="portal.W035",
                )
            )
    return problems


@register(Tags.compatibility)
def check_probe(app_configs: Any = None, **kwargs: Any) -> list:
    """The end-to-end probe's settings: an interval of at least a minute, and mailboxes the
    portal may send from (MESSAGING_SENDER_MAILBOXES)."""
    problems = []
    if settings.PROBE_INTERVAL_MINUTES < 1:
        problems.append(
            Error(
                f"PROBE_INTERVAL_MINUTES is {settings.PROBE_INTERVAL_MINUTES}: the probe runs at "
                "most once a minute.",
                hint="Set PROBE_INTERVAL_MINUTES to 1 or more (default 2).",
                id="portal.E050",
            )
        )
    senders = set(settings.MESSAGING_SENDER_MAILBOXES)
    for name, value in (
        ("PROBE_MAILBOX", settings.PROBE_MAILBOX),
        ("PROBE_SENDER", settings.PROBE_SENDER),
    ):
        if value and value.lower() not in senders:
            problems.append(
                Error(
                    f"{name} {value} is not one of the portal's sender mailboxes.",
                    hint="Add it to MESSAGING_SENDER_MAILBOXES, or name one that is listed.",
                    id="portal.E051",
                )
            )
    return problems
