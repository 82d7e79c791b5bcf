"""PostgreSQL privileges for the app's database role (DATABASE_APP_ROLE).

Migrations run as the role that owns the tables; the app connects as another role. Only the
owner (or a superuser) can ALTER a table, so the app cannot disable the audit triggers; and
it gets SELECT and INSERT on the audit tables only, so it cannot UPDATE, DELETE or TRUNCATE
them even if the triggers were gone. Everything else it may read and write.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connections

APPEND_ONLY_TABLES = ("audit_auditevent", "audit_auditcheckpoint")


def grant_app_role(role: str, using: str = "default") -> None:
    """Give `role` the app's privileges on every table and sequence of the current schema."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    name = connection.ops.quote_name(role)
    tables = ", ".join(connection.ops.quote_name(table) for table in APPEND_ONLY_TABLES)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        schema = connection.ops.quote_name(cursor.fetchone()[0])
        for statement in (
            f"GRANT USAGE ON SCHEMA {schema} TO {name}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {name}",
            f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {name}",
            f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {tables} FROM {name}",
            f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {tables} FROM PUBLIC",
        ):
            cursor.execute(statement)


def role_problems(using: str = "default") -> list[str]:
    """What lets the connected role rewrite the audit tables behind the triggers' back.

    A superuser or a member of the tables' owner can disable the triggers, or skip them with
    `SET session_replication_role = replica` (superusers, and on PostgreSQL 15+ whoever was
    granted SET on that parameter). Empty on other databases (see docs/security.md).
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return []
    problems = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
        user, superuser = cursor.fetchone()
        if superuser:
            return [f"the database role {user!r} is a superuser"]
        cursor.execute(
            "SELECT c.relname FROM pg_class c "
            "WHERE c.relname = ANY(%s) AND c.relnamespace = current_schema()::regnamespace "
            "AND pg_has_role(current_user, c.relowner, 'USAGE') ORDER BY c.relname",
            [list(APPEND_ONLY_TABLES)],
        )
        owned = [row[0] for row in cursor.fetchall()]
        if owned:
            problems.append(f"the database role {user!r} owns {', '.join(owned)}")
        cursor.execute("SELECT current_setting('server_version_num')::int")
        if cursor.fetchone()[0] >= 150000:  # SET privileges on parameters came in 15
            cursor.execute(
                "SELECT has_parameter_privilege(current_user, 'session_replication_role', 'SET')"
            )
            if cursor.fetchone()[0]:
                problems.append(
                    f"the database role {user!r} may SET session_replication_role "
                    "(which skips the triggers)"
                )
    return problems


def grant_after_migrate(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """post_migrate: keep DATABASE_APP_ROLE's privileges in step with the tables."""
    role = settings.DATABASE_APP_ROLE
    if role:
        grant_app_role(role, using)
