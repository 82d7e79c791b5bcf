import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.test import override_settings

from portal.checks import check_database_options, check_encryption_keys, check_task_queue

BASE_CLUSTER = {"timeout": 60, "retry": 120, "orm": "default", "save_limit": -1}


def ids(messages):
    return [message.id for message in messages]


class TestTaskQueueCheck:
    def test_the_shipped_settings_pass(self):
        assert check_task_queue() == []

    def test_it_flags_retry_not_above_timeout(self):
        with override_settings(Q_CLUSTER={**BASE_CLUSTER, "timeout": 120, "retry": 120}):
            assert ids(check_task_queue()) == ["portal.E002"]

    def test_it_flags_a_missing_timeout(self):
        with override_settings(Q_CLUSTER={**BASE_CLUSTER, "timeout": None}):
            assert ids(check_task_queue()) == ["portal.E001"]

    def test_it_flags_an_unknown_orm_database(self):
        with override_settings(Q_CLUSTER={**BASE_CLUSTER, "orm": "nowhere"}):
            assert ids(check_task_queue()) == ["portal.E003"]

    def test_it_flags_no_broker(self):
        cluster = {k: v for k, v in BASE_CLUSTER.items() if k != "orm"}
        with override_settings(Q_CLUSTER=cluster):
            assert ids(check_task_queue()) == ["portal.E004"]

    def test_it_warns_about_a_positive_save_limit(self):
        with override_settings(Q_CLUSTER={**BASE_CLUSTER, "save_limit": 250}):
            assert ids(check_task_queue()) == ["portal.W001"]


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
class TestDatabaseCheck:
    def test_the_shipped_settings_pass(self):
        assert check_database_options() == []

    def test_it_requires_immediate_transactions_on_sqlite(self):
        db = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:", "OPTIONS": {}}
        with override_settings(DATABASES={"default": db}):
            assert ids(check_database_options()) == ["portal.E010"]

    def test_it_warns_about_short_lived_postgres_connections(self):
        db = {"ENGINE": "django.db.backends.postgresql", "NAME": "x", "CONN_MAX_AGE": 0}
        with override_settings(DATABASES={"default": db}):
            assert ids(check_database_options()) == ["portal.W010"]


def test_encryption_keys_check():
    assert check_encryption_keys() == []
    with override_settings(FIELD_ENCRYPTION_KEYS=[]):
        assert ids(check_encryption_keys()) == ["portal.E020"]


def _manage(args, **env):
    # A clean environment: nothing the test settings set may leak into "production".
    leaked = {
        "DEBUG",
        "SECRET_KEY",
        "FIELD_ENCRYPTION_KEYS",
        "AUDIT_CHAIN_KEY",
        "DJANGO_ALLOW_ASYNC_UNSAFE",
    }
    environment = {
        k: v for k, v in os.environ.items() if k not in leaked and not k.startswith("SECURE_")
    }
    environment.update(PORTAL_IGNORE_DOTENV="1", DJANGO_SETTINGS_MODULE="portal.settings", **env)
    return subprocess.run(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "p" + "roduction-secret-key-with-enough-entropy-" + "k7Qx9Zr2Lm4Vb8Nw" * 3,
    "ALLOWED_HOSTS": "portal.example.com",
    "FIELD_ENCRYPTION_KEYS": "Z7v0bqVXc3L8RJd2f5m9gQq5bUq1ZkBl3sRr8uH1o2U=",
    "AUDIT_CHAIN_KEY": "prod1:" + "audit-chain-production-key-" * 2,
    # PostgreSQL with the app's own role (check --deploy warns about SQLite and about a
    # missing DATABASE_APP_ROLE); nothing connects to it.
    "DATABASE_URL": "postgres://fleet_app@db.invalid:5432/fleet",
    "DATABASE_APP_ROLE": "fleet_app",
}


def test_a_production_configuration_passes_check_deploy():
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_without_an_audit_chain_key_fails_check():
    environment = {k: v for k, v in PRODUCTION.items() if k != "AUDIT_CHAIN_KEY"}
    result = _manage(["check", "--deploy"], **environment)
    assert result.returncode != 0
    assert "portal.E030" in result.stderr + result.stdout


def test_debug_in_production_fails_check_deploy():
    result = _manage(
        ["check", "--deploy", "--fail-level", "WARNING"], **{**PRODUCTION, "DEBUG": "true"}
    )
    assert result.returncode != 0
    assert "security.W018" in result.stderr + result.stdout


def test_a_bad_value_stops_start_up_with_a_clear_message():
    result = _manage(["check"], **{**PRODUCTION, "Q_WORKERS": "lots"})
    assert result.returncode != 0
    assert "Q_WORKERS must be a whole number" in result.stderr


def test_a_short_secret_key_is_refused_in_production():
    result = _manage(["check"], **{**PRODUCTION, "SECRET_KEY": "short"})
    assert result.returncode != 0
    assert "SECRET_KEY must be at least 50 characters" in result.stderr


SSO_PRODUCTION = {
    **PRODUCTION,
    "SSO_ENABLED": "true",
    "SSO_TENANT_ID": "8d2f6c5e-4b1a-4f0e-9c3d-2a7b6e5f4d3c",
    "SSO_CLIENT_ID": "3f1e2d4c-5b6a-4978-8c9d-0e1f2a3b4c5d",
    "SSO_CLIENT_SECRET": "not-a-real-secret-but-long-enough-to-look-like-one",
    "SSO_REDIRECT_URI": "https://portal.example.com/login/microsoft/callback",
    "SSO_ONLY": "true",
    "SSO_BREAK_GLASS_ACCOUNTS": "breakglass-1",
    "SSO_TRUST_ENTRA_MFA": "true",
}


def test_a_production_configuration_with_sso_passes_check_deploy():
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], **SSO_PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "check_id"),
    [
        ({"SSO_TENANT_ID": "contoso.onmicrosoft.com"}, "portal.E040"),
        ({"SSO_CLIENT_SECRET": ""}, "portal.E042"),
        ({"SSO_REDIRECT_URI": "http://portal.example.com/login/microsoft/callback"}, "portal.W042"),
        ({"SSO_BREAK_GLASS_ACCOUNTS": ""}, "portal.W043"),
    ],
)
def test_unsafe_sso_settings_fail_check_deploy(change, check_id):
    result = _manage(
        ["check", "--deploy", "--fail-level", "WARNING"], **{**SSO_PRODUCTION, **change}
    )
    assert result.returncode != 0 and check_id in result.stdout + result.stderr
