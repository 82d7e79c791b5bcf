"""Test settings: the real settings module, with a test environment and a few overrides."""

import os

# The developer's .env (written by `make run`) must not leak into the test run.
os.environ["PORTAL_IGNORE_DOTENV"] = "1"
os.environ.setdefault("SECRET_KEY", "test-secret-key-" + "x" * 50)
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECURE_COOKIES", "false")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
# Sign-in tests use force_login; the MFA tests turn this on themselves.
os.environ.setdefault("REQUIRE_MFA", "false")
os.environ.setdefault("AUDIT_CHAIN_KEY", "test:" + "audit-chain-test-key-" * 3)
# Tests trace into memory (tests/integrations/microsoft/test_tracing.py), never to a
# developer's collector.
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = ""
os.environ.setdefault("FIELD_ENCRYPTION_KEYS", "Z7v0bqVXc3L8RJd2f5m9gQq5bUq1ZkBl3sRr8uH1o2U=")

from portal.settings import *  # noqa: F403

if "integrations.graph_emulator" not in INSTALLED_APPS:  # type: ignore[used-before-def]  # noqa: F405
    INSTALLED_APPS = [*INSTALLED_APPS, "integrations.graph_emulator"]  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not pytest-django's shared in-memory database: it locks like production SQLite
    # (WAL, busy timeout) and a worker subprocess (qcluster) can open it.
    # One file per test run, so parallel runs in one checkout never share it.
    import tempfile

    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.environ.get("PORTAL_TEST_SQLITE_PATH")
        or os.path.join(tempfile.gettempdir(), f"fleet-portal-test-{os.getpid()}.sqlite3")
    }
