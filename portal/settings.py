"""Settings for the Fleet Graph Portal: one module, driven by the environment.

Every variable is listed, with its default, in docs/configuration.md and `.env.example`. A `.env`
file at the project root is read when present; real environment variables win over it, so every
`manage.py` command in another terminal talks to the same portal that `make run` started.

Over 600 lines on purpose: every setting's default is defined once, here, and read as
`settings.X` at call time.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

from portal.access.roles import ROLES
from portal.lib.dburl import parse_database_url
from portal.lib.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_secret,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# The .env this portal reads (None: settings come from the environment only); connect_tenant
# writes the tenant settings into it.
DOTENV_FILE = None if env_bool("PORTAL_IGNORE_DOTENV", False) else BASE_DIR / ".env"
if DOTENV_FILE is not None:
    load_dotenv(DOTENV_FILE, override=False)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY", required=True)
if not DEBUG and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters when DEBUG is off.")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
PORT = env_int("PORT", 8000, minimum=1, maximum=65535)
# Where Graph must reach us (webhooks); used by later issues and verify_integration.
PUBLIC_BASE_URL = env_str("PUBLIC_BASE_URL", f"http://127.0.0.1:{PORT}").rstrip("/")

INSTALLED_APPS = [
    "portal.access.admin_config.PortalAdminConfig",
    # Before django.contrib.auth, so its audited createsuperuser/changepassword win.
    "portal.access.auth_commands",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "django_q",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "portal",
    "portal.access",
    "portal.audit",
    "portal.jobs",
    "portal.runtime",
    "portal.alerts",
    "portal.api",
    "portal.events",
    "portal.recovery",
    "portal.approvals",
    "portal.console",
    "integrations.microsoft",
]
# The emulator's app (its `graph_emulator` command) only in development; tests add it in
# portal/settings_test.py. `python -m integrations.graph_emulator` runs it without the app.
if DEBUG:
    INSTALLED_APPS.append("integrations.graph_emulator")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files from the app server itself (hashed names, compressed, cached for ever).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "portal.lib.middleware.RequestIdMiddleware",
    # Graph's webhooks answer here, without the browser-facing layers below.
    "portal.api.middleware.WebhookFastPathMiddleware",
    "portal.lib.middleware.ContentSecurityPolicyMiddleware",
    "portal.lib.middleware.VaryOnHtmxMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "portal.access.middleware.SessionLifetimeMiddleware",
    "portal.access.middleware.EntraRoleRecheckMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Console times in each person's chosen time zone (default UTC).
    "portal.console.middleware.TimeZoneMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "portal.access.middleware.DenyByDefaultMiddleware",
    # A covered action raised ApprovalRequired in a page: show the approval request form.
    "portal.approvals.middleware.ApprovalRequiredMiddleware",
    # Axes must come last: it turns its lockout signal into a response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.console.context_processors.navigation",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
DATABASE_URL = env_secret("DATABASE_URL")
# Long enough that a quiet receiver (a Graph notification every few minutes per web thread)
# keeps its connection: opening one costs a request ~10 ms on PostgreSQL.
DB_CONN_MAX_AGE = env_int("DB_CONN_MAX_AGE", 600, minimum=0)
if DATABASE_URL:
    DATABASES = {"default": parse_database_url(DATABASE_URL, conn_max_age=DB_CONN_MAX_AGE)}
else:
    # SQLite under a multi-process worker needs WAL and IMMEDIATE transactions, or the
    # read-then-write upgrade fails with "database is locked" .
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Background work (django-q2) ----------------------------------------------------------
# django-q2 freezes Q_CLUSTER when django_q.conf is first imported: change it through the
# environment, not at run time.
REDIS_URL = env_secret("REDIS_URL")
Q_TIMEOUT = env_int("Q_TIMEOUT", 300, minimum=1)
Q_RETRY = env_int("Q_RETRY", 360, minimum=2)
Q_CLUSTER = {
    "name": env_str("Q_CLUSTER_NAME", "fleet-portal"),
    "workers": env_int("Q_WORKERS", 2, minimum=1, maximum=64),
    # A task running longer than `timeout` is killed; one not acknowledged after `retry` is
    # delivered again, so retry must exceed timeout (checked in portal/checks.py).
    "timeout": Q_TIMEOUT,
    "retry": Q_RETRY,
    "max_attempts": env_int("Q_MAX_ATTEMPTS", 3, minimum=0),
    "ack_failures": True,
    # Our Job table keeps the history; keeping django-q2 success rows would halve throughput
    # through its pruning . Failures are still stored.
    "save_limit": -1,
    "catch_up": False,
    # An idle worker's longest wait: a dispatch wakes its queue's workers at once
    # (portal/jobs/broker.py on PostgreSQL, the blocking pop on Redis).
    "poll": env_float("Q_POLL_SECONDS", 0.5, minimum=0.01),
    "recycle": 500,
    "label": "Django Q",
    "sync": env_bool("Q_SYNC", False),
}
# Succeeded jobs are kept this long (failed and dead ones until an operator acts).
JOB_RETENTION_DAYS = env_int("JOB_RETENTION_DAYS", 7, minimum=1)
# Days each kind of record is kept (the hourly `retention.prune` schedule; rows not yet
# handled, like unprocessed notifications or running syncs, are kept whatever their age).
GRAPH_CALL_RETENTION_DAYS = env_int("GRAPH_CALL_RETENTION_DAYS", 8, minimum=1)
NOTIFICATION_INBOX_RETENTION_DAYS = env_int("NOTIFICATION_INBOX_RETENTION_DAYS", 7, minimum=1)
SYNC_RUN_RETENTION_DAYS = env_int("SYNC_RUN_RETENTION_DAYS", 30, minimum=1)
LIFECYCLE_EVENT_RETENTION_DAYS = env_int("LIFECYCLE_EVENT_RETENTION_DAYS", 30, minimum=1)
WEBHOOK_REJECTION_RETENTION_DAYS = env_int("WEBHOOK_REJECTION_RETENTION_DAYS", 90, minimum=1)
# The dashboard's 7-day charts read the samples (folded to 10 minutes after a day): keep 8 days.
METRIC_SAMPLE_RETENTION_DAYS = env_int("METRIC_SAMPLE_RETENTION_DAYS", 8, minimum=1)
# Feed events no endpoint still waits for, and finished deliveries (their bodies), go after
# this many days; events after any endpoint's cursor stay whatever their age.
EVENT_RETENTION_DAYS = env_int("EVENT_RETENTION_DAYS", 30, minimum=1)
# Extra modules that register job handlers (beyond every app's job_handlers.py).
JOB_HANDLER_MODULES = env_list("JOB_HANDLER_MODULES")
# Event deliveries have a django-q2 queue of their own (`<name>-events`, as
# portal.jobs.runner.queue_key names it), served only by workers started with
# WORKER_QUEUE=events: a slow event endpoint never holds a worker that Graph work needs.
WORKER_QUEUE = env_str("WORKER_QUEUE", "")
if WORKER_QUEUE not in ("", "events"):
    raise ImproperlyConfigured("WORKER_QUEUE is empty (the main queue) or 'events'.")
if WORKER_QUEUE:
    Q_CLUSTER["cluster_name"] = f"{Q_CLUSTER['name']}-{WORKER_QUEUE}"
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    # The ORM broker, but an idle worker waits for a NOTIFY instead of its poll (PostgreSQL).
    Q_CLUSTER["broker_class"] = "portal.jobs.broker.WakingORM"

# --- Approvals (docs/security.md, "Approvals") ----------------------------------------------
# Actions that need a second person; set, it replaces the console's policy page. Empty: the page.
APPROVAL_REQUIRED_FOR = env_list("APPROVAL_REQUIRED_FOR")
# Bulk retry / bulk renew need approval only above this many items.
APPROVAL_BULK_THRESHOLD = env_int("APPROVAL_BULK_THRESHOLD", 100, minimum=1)
APPROVAL_EXPIRY_MINUTES = env_int("APPROVAL_EXPIRY_MINUTES", 60, minimum=1, maximum=7 * 24 * 60)
# A mailbox the portal may send from: each new request is e-mailed to who may approve it.
APPROVAL_NOTIFY_FROM = env_str("APPROVAL_NOTIFY_FROM")

# --- Authentication, sessions, login throttling -------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Passwords: refused for everyone but the break-glass accounts when SSO_ONLY is on.
    "portal.access.backends.LocalPasswordBackend",
    # Sessions started by "Sign in with Microsoft" (it authenticates nothing itself).
    "portal.access.backends.EntraBackend",
    "portal.access.backends.AdminRoleBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console:dashboard"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# A second factor (an authenticator app, TOTP) for every console session: ASVS requires it
# for admin interfaces. On by default outside DEBUG.
REQUIRE_MFA = env_bool("REQUIRE_MFA", not DEBUG)
OTP_TOTP_ISSUER = "Fleet Graph Portal"

AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
# Failed sign-ins (any usernames, and refused Microsoft sign-in answers) per client address in
# each LOGIN_COOLOFF_MINUTES window, before that address must wait for the next window
# (portal/access/credential_limits.py): above the per-username limit, so it stops spraying.
LOGIN_ADDRESS_FAILURE_LIMIT = env_int(
    "LOGIN_ADDRESS_FAILURE_LIMIT", max(30, AXES_FAILURE_LIMIT + 1), minimum=AXES_FAILURE_LIMIT + 1
)
# Per username and the client's real address (behind a proxy too), never per proxy.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "portal.access.addresses.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

# An admin tool: short sessions (OWASP ASVS L2: 12 h absolute, 30 min idle).
SESSION_IDLE_MINUTES = env_int("SESSION_IDLE_MINUTES", 30, minimum=1)
SESSION_MAX_HOURS = env_int("SESSION_MAX_HOURS", 12, minimum=1)
SESSION_COOKIE_AGE = SESSION_IDLE_MINUTES * 60
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

# --- Transport security -------------------------------------------------------------------
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
if SECURE_COOKIES:
    # __Host- cookies cannot be set for another domain or path, nor over plain HTTP.
    SESSION_COOKIE_NAME = "__Host-sessionid"
    CSRF_COOKIE_NAME = "__Host-csrftoken"
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Joining the browsers' preload list is a decision for the whole domain, not for this portal,
# so it stays off (and its deploy warning quiet) unless SECURE_HSTS_PRELOAD asks for it.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Paths that must answer over plain HTTP even with SECURE_SSL_REDIRECT (probes inside the pod).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Client addresses: REMOTE_ADDR, unless the peer is one of these reverse proxies; then the
# right-most X-Forwarded-For hop that is not one of them (portal/access/addresses.py).
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES")
if env_bool("TRUST_X_FORWARDED_FOR", False):
    # It believed the left-most hop, which any caller can write.
    raise ImproperlyConfigured(
        "TRUST_X_FORWARDED_FOR is gone: list your reverse proxies' addresses or networks in "
        "TRUSTED_PROXIES instead (X-Forwarded-For is read only from them)."
    )

# --- API ----------------------------------------------------------------------------------
# Refused API credentials allowed per client address and per token prefix in each window;
# past it the API answers 429 with Retry-After (portal/access/credential_limits.py).
API_AUTH_FAILURE_LIMIT = env_int("API_AUTH_FAILURE_LIMIT", 20, minimum=1)
API_AUTH_FAILURE_WINDOW_SECONDS = env_int(
    "API_AUTH_FAILURE_WINDOW_SECONDS", 300, minimum=10, maximum=86_400
)
# Networks whose callers may read /api/metrics/* without a token (the runbook's curls do).
API_TRUSTED_NETWORKS = env_networks("API_TRUSTED_NETWORKS", ["127.0.0.1/32", "::1/128"])
# How long an Idempotency-Key on POST /api/messages is remembered (the IETF draft: ≥ 24 h).
API_IDEMPOTENCY_TTL_HOURS = env_int("API_IDEMPOTENCY_TTL_HOURS", 24, minimum=24)
# Event endpoints (push): networks allowed although private/loopback (e.g. an in-cluster
# receiver), batch size, how long an endpoint may fail before it is disabled, timeouts.
EVENT_ENDPOINT_ALLOWED_NETWORKS = env_networks("EVENT_ENDPOINT_ALLOWED_NETWORKS", [])
EVENT_DELIVERY_BATCH_SIZE = env_int("EVENT_DELIVERY_BATCH_SIZE", 50, minimum=1)
EVENT_ENDPOINT_DISABLE_AFTER_HOURS = env_int("EVENT_ENDPOINT_DISABLE_AFTER_HOURS", 24, minimum=1)
EVENT_CONNECT_TIMEOUT = env_float("EVENT_CONNECT_TIMEOUT", 3, minimum=0.1)
EVENT_READ_TIMEOUT = env_float("EVENT_READ_TIMEOUT", 5, minimum=0.1)
# One delivery's whole exchange (connect, send, the answer's headers and body), however the
# receiver spaces its bytes; below the delivery job's 30 s timeout.
EVENT_DELIVERY_DEADLINE_SECONDS = env_float(
    "EVENT_DELIVERY_DEADLINE_SECONDS", 10, minimum=0.5, maximum=25
)
# Deliveries in flight at once, per endpoint and per owner (a service client, or the console
# for all the endpoints people made); one over either waits, without using an attempt.
EVENT_DELIVERY_ENDPOINT_CONCURRENCY = env_int("EVENT_DELIVERY_ENDPOINT_CONCURRENCY", 2, minimum=1)
EVENT_DELIVERY_OWNER_CONCURRENCY = env_int("EVENT_DELIVERY_OWNER_CONCURRENCY", 3, minimum=1)
# Worker processes runportal starts for the events queue (Q_WORKERS is the main queue's).
EVENT_DELIVERY_WORKERS = env_int("EVENT_DELIVERY_WORKERS", 4, minimum=1, maximum=64)
EVENT_ENDPOINT_CA_BUNDLE = env_str("EVENT_ENDPOINT_CA_BUNDLE", "")
# Mailboxes the send API may send from besides the monitored users (UPNs, comma-separated).
MESSAGING_SENDER_MAILBOXES = [m.lower() for m in env_list("MESSAGING_SENDER_MAILBOXES", [])]

# --- Alerts and metrics ---------------------------------------------------------------------
# Who gets alert e-mails (Django's EMAIL_* settings send them), comma-separated.
ALERT_EMAIL_TO = env_list("ALERT_EMAIL_TO")
# Also post alerts to this Teams chat through the connected sender (e-mail when it cannot).
ALERT_TEAMS_CHAT_ID = env_str("ALERT_TEAMS_CHAT_ID")
# The window the rate rules judge (Graph failing, 429s, messages failing): short, so an alert
# fires within minutes of its cause and clears within minutes of its end (evaluated every
# minute: it clears at most this plus a minute after the last bad answer).
ALERT_WINDOW_SECONDS = env_int("ALERT_WINDOW_SECONDS", 180, minimum=10, maximum=3600)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "fleet-graph-portal@localhost")
if DEBUG and not env_str("EMAIL_HOST"):
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
# /metrics also answers a bearer token (Prometheus' `authorization` setting) from anywhere.
METRICS_TOKEN = env_secret("METRICS_TOKEN")

# --- Secrets at rest ----------------------------------------------------------------------
# Fernet keys (newest first, comma-separated) for client secrets, token caches and
# clientState values. Deliberately not derived from SECRET_KEY.
FIELD_ENCRYPTION_KEYS = [
    key.strip() for key in env_secret("FIELD_ENCRYPTION_KEYS").split(",") if key.strip()
]

# --- Audit log ------------------------------------------------------------------------------
# The audit chain's HMAC keys, newest first: "id:secret,id:secret" (the first signs, the rest
# still verify older rows). Not in the database, so its writers cannot forge the chain.
# Required outside DEBUG (system check portal.E030); `manage.py generate_audit_chain_key`.
AUDIT_CHAIN_KEY = env_secret("AUDIT_CHAIN_KEY")
if DEBUG and not AUDIT_CHAIN_KEY:
    # A development portal without one still works; the key is derived, never stored.
    import hashlib as _hashlib

    AUDIT_CHAIN_KEY = "debug:" + _hashlib.sha256(("audit-chain:" + SECRET_KEY).encode()).hexdigest()
# The PostgreSQL role the app connects as, when migrations run as the tables' owner: migrate
# grants it what the app needs and, on the audit tables, only SELECT and INSERT.
DATABASE_APP_ROLE = env_str("DATABASE_APP_ROLE")
# Every audit checkpoint is also appended here as one JSON line (a copy outside the database;
# `verify_audit_chain --against FILE` compares with it). Empty: the log only.
AUDIT_CHECKPOINT_FILE = env_str("AUDIT_CHECKPOINT_FILE")
# The audit stream (portal/audit/stream.py): sink URLs, comma-separated (syslog://,
# syslog+tls://, file://, splunk+https://, https://), each shipped from its own cursor.
AUDIT_STREAM_SINKS = env_list("AUDIT_STREAM_SINKS")
AUDIT_STREAM_HEC_TOKEN = env_secret("AUDIT_STREAM_HEC_TOKEN")
AUDIT_STREAM_SIGNING_SECRET = env_secret("AUDIT_STREAM_SIGNING_SECRET")  # whsec_… (https://)
AUDIT_STREAM_CA_FILE = env_str("AUDIT_STREAM_CA_FILE")  # CA bundle for TLS sinks (default: system)
# How long unshipped records are kept at the least (the audit tables, never pruned, hold them).
AUDIT_STREAM_BUFFER_DAYS = env_int("AUDIT_STREAM_BUFFER_DAYS", 7, minimum=1)
AUDIT_STREAM_BATCH_SIZE = env_int("AUDIT_STREAM_BATCH_SIZE", 500, minimum=1)
AUDIT_STREAM_TIMEOUT_SECONDS = env_float("AUDIT_STREAM_TIMEOUT_SECONDS", 10.0, minimum=0.5)

# --- Microsoft Graph ----------------------------------------------------------------------
# Defaults are Microsoft's; `make run` points them at the local emulator (a demo tenant).
MICROSOFT_TENANT_ID = env_str("MICROSOFT_TENANT_ID")
MICROSOFT_CLIENT_ID = env_str("MICROSOFT_CLIENT_ID")
# Bootstraps the credential store; after that, rotate with the console or rotate_client_secret.
MICROSOFT_CLIENT_SECRET = env_secret("MICROSOFT_CLIENT_SECRET")
# Workload identity: a federated token file (read at every token request) instead of a secret;
# by default the one AKS workload identity projects. Bootstraps the store like the secret.
MICROSOFT_CLIENT_ASSERTION_FILE = env_str(
    "MICROSOFT_CLIENT_ASSERTION_FILE", env_str("AZURE_FEDERATED_TOKEN_FILE")
)
MICROSOFT_AUTHORITY_HOST = env_str(
    "MICROSOFT_AUTHORITY_HOST", "https://login.microsoftonline.com"
).rstrip("/")
MICROSOFT_GRAPH_URL = env_str("MICROSOFT_GRAPH_URL", "https://graph.microsoft.com/v1.0").rstrip("/")
# A CA bundle for Graph and the identity platform ("" = the system's CA store).
MICROSOFT_CA_BUNDLE = env_str("MICROSOFT_CA_BUNDLE")
MICROSOFT_ALLOW_EMULATOR = env_bool("MICROSOFT_ALLOW_EMULATOR", DEBUG)
GRAPH_CONNECT_TIMEOUT = env_int("GRAPH_CONNECT_TIMEOUT", 5, minimum=1)
GRAPH_READ_TIMEOUT = env_int("GRAPH_READ_TIMEOUT", 30, minimum=1)
GRAPH_MAX_IN_FLIGHT_PER_MAILBOX = env_int("GRAPH_MAX_IN_FLIGHT_PER_MAILBOX", 4, minimum=1)
GRAPH_MAILBOX_BUDGET_PER_10_MIN = env_int("GRAPH_MAILBOX_BUDGET_PER_10_MIN", 10_000, minimum=1)
# Throttling waits up to this long are slept in-process; longer ones go back to the job layer.
GRAPH_MAX_IN_PROCESS_WAIT_SECONDS = env_int("GRAPH_MAX_IN_PROCESS_WAIT_SECONDS", 10, minimum=0)
GRAPH_MAX_RETRIES = env_int("GRAPH_MAX_RETRIES", 3, minimum=0)
# Backoff when Graph gives no Retry-After: base * 2^attempt with jitter, capped.
GRAPH_BACKOFF_BASE_SECONDS = env_float("GRAPH_BACKOFF_BASE_SECONDS", 1.0, minimum=0.0)
GRAPH_BACKOFF_MAX_SECONDS = env_float("GRAPH_BACKOFF_MAX_SECONDS", 60.0, minimum=0.0)
MICROSOFT_GRAPH_RESOURCE = env_str("MICROSOFT_GRAPH_RESOURCE", "https://graph.microsoft.com")
# Application permissions verify_integration requires in the token's roles claim.
GRAPH_REQUIRED_ROLES = env_list(
    "GRAPH_REQUIRED_ROLES", ["User.Read.All", "Mail.ReadWrite", "Mail.Send", "Chat.Read.All"]
)
# How often each process re-reads which client secret is active (after a rotation).
CREDENTIAL_RECHECK_SECONDS = env_int("CREDENTIAL_RECHECK_SECONDS", 30, minimum=1)
# Where the identity platform sends the Teams sender's browser back (a console page).
MICROSOFT_DELEGATED_REDIRECT_PATH = env_str(
    "MICROSOFT_DELEGATED_REDIRECT_PATH", "/credentials/teams-sender/callback"
)

# --- Outbound messages ------------------------------------------------------------------------
# Budgets shared by every worker (Graph's own limits: 30 mails/min per mailbox, 1 post/s per chat).
MESSAGING_MAIL_PER_MINUTE = env_float("MESSAGING_MAIL_PER_MINUTE", 30, minimum=0.1)
MESSAGING_TEAMS_PER_SECOND = env_float("MESSAGING_TEAMS_PER_SECOND", 1.0, minimum=0.01)
MESSAGING_TEAMS_SENDER_PER_SECOND = env_float(
    "MESSAGING_TEAMS_SENDER_PER_SECOND", 1.0, minimum=0.01
)
# A send waits in the worker this long for its budget slot; longer waits reschedule the job.
MESSAGING_MAX_BUDGET_WAIT_SECONDS = env_float("MESSAGING_MAX_BUDGET_WAIT_SECONDS", 20, minimum=0)
# After a crash mid-send, how long a retry waits for Graph to show what was already sent.
MESSAGING_SEND_SETTLE_SECONDS = env_float("MESSAGING_SEND_SETTLE_SECONDS", 60, minimum=0)
MESSAGING_TEAMS_SETTLE_SECONDS = env_float("MESSAGING_TEAMS_SETTLE_SECONDS", 10, minimum=0)
# "delegated" (the connected sender account). "app" only demonstrates Graph's refusal.
MESSAGING_TEAMS_TOKEN_KIND = env_str("MESSAGING_TEAMS_TOKEN_KIND", "delegated")

# --- Webhooks and sync ----------------------------------------------------------------------
# Where Graph posts notifications ("" = PUBLIC_BASE_URL); verify_integration's round trip
# goes to WEBHOOK_VALIDATION_URL ("" = the mail receiver under it).
WEBHOOK_BASE_URL = env_str("WEBHOOK_BASE_URL")
WEBHOOK_VALIDATION_URL = env_str("WEBHOOK_VALIDATION_URL")
WEBHOOK_MAX_BODY_BYTES = env_int("WEBHOOK_MAX_BODY_BYTES", 1_000_000, minimum=1024)
WEBHOOK_MAX_VALIDATION_TOKEN_CHARS = env_int("WEBHOOK_MAX_VALIDATION_TOKEN_CHARS", 1024, minimum=16)
# The receiver caches each subscription's decrypted clientState this long per process (a
# deleted subscription's notifications are dropped by the insert's join meanwhile).
WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = env_int("WEBHOOK_SUBSCRIPTION_CACHE_SECONDS", 30, minimum=0)
# The end-to-end probe (docs/operations.md): a tagged mail from PROBE_SENDER ("" = the probe
# mailbox itself) to PROBE_MAILBOX, a monitored mailbox listed in MESSAGING_SENDER_MAILBOXES,
# every PROBE_INTERVAL_MINUTES (under 1 is refused by a system check). "Not set up" until a
# probe mailbox is named.
PROBE_ENABLED = env_bool("PROBE_ENABLED", True)
PROBE_MAILBOX = env_str("PROBE_MAILBOX").lower()
PROBE_SENDER = env_str("PROBE_SENDER").lower()
# With a connected Teams sender, the probe also posts to this chat (one the sender is in and
# a monitored user's chats subscription covers).
PROBE_CHAT_ID = env_str("PROBE_CHAT_ID")
PROBE_INTERVAL_MINUTES = env_float("PROBE_INTERVAL_MINUTES", 2)
# A probe seen by delta without its notification after this long: "notifications not arriving".
PROBE_NOTIFICATION_TIMEOUT_MINUTES = env_float(
    "PROBE_NOTIFICATION_TIMEOUT_MINUTES", 5, minimum=0.01
)
# A notification request answered slower than this counts as slow. Graph delays an endpoint
# whose answers are slow more than 10 % of the time in 10 minutes and drops its notifications
# past 15 % (its docs have said both 2.9 s and 10 s for "slow"; warn early).
NOTIFICATION_SLOW_ANSWER_SECONDS = env_float("NOTIFICATION_SLOW_ANSWER_SECONDS", 2.9, minimum=0.001)
# The inbox drain (`manage.py drain_inbox`): rows per transaction, and how long it waits for a
# wake-up before it looks anyway (PostgreSQL wakes it with NOTIFY; SQLite only polls).
INBOX_DRAIN_BATCH = env_int("INBOX_DRAIN_BATCH", 500, minimum=1, maximum=10_000)
INBOX_DRAIN_IDLE_SECONDS = env_float("INBOX_DRAIN_IDLE_SECONDS", 0.5, minimum=0.01)
# A per-container file (the pods' /tmp is an emptyDir); only its modification time is read.
INBOX_DRAIN_ALIVE_FILE = env_str("INBOX_DRAIN_ALIVE_FILE", "/tmp/inbox-drain.alive")  # noqa: S108
# Renew a subscription once this fraction of its lifetime has passed.
SUBSCRIPTION_RENEW_FRACTION = env_float(
    "SUBSCRIPTION_RENEW_FRACTION", 0.5, minimum=0.1, maximum=0.9
)
# Subscription creations, renewals and deletions per 20 s, every process together. Graph
# allows 500 per 20 s per app and tenant ("Microsoft Graph service-specific throttling
# limits", subscription service); a little below leaves room for requests that arrive later
# than their slot and for an operator's own.
GRAPH_SUBSCRIPTION_OPS_PER_20_SECONDS = env_int(
    "GRAPH_SUBSCRIPTION_OPS_PER_20_SECONDS", 480, minimum=1, maximum=500
)
# Subscriptions created, renewed or deleted at once by one set-up or maintenance run.
SUBSCRIPTION_SETUP_CONCURRENCY = env_int("SUBSCRIPTION_SETUP_CONCURRENCY", 4, minimum=1, maximum=32)
# From this many monitored users watching chats, one tenant-wide /chats/getAllMessages
# subscription replaces the per-user ones: Teams allows 10,000 subscriptions per organisation
# across all apps ("subscription resource type", quotas), so per-user ones cannot scale, and
# the rest of the quota is left to the tenant's other apps.
TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD = env_int(
    "TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD", 5000, minimum=1
)
# How long the monitored members of a chat (for the tenant-wide subscription) are trusted.
CHAT_MEMBERS_REFRESH_MINUTES = env_float("CHAT_MEMBERS_REFRESH_MINUTES", 60, minimum=0.0)
SYNC_PAGE_SIZE = env_int("SYNC_PAGE_SIZE", 100, minimum=1, maximum=1000)
SYNC_MAX_PAGES_PER_RUN = env_int("SYNC_MAX_PAGES_PER_RUN", 50, minimum=1)
SYNC_LEASE_SECONDS = env_int("SYNC_LEASE_SECONDS", 330, minimum=30)
# Interval syncs are spread over this many seconds so mailboxes don't all start at once.
SYNC_SPREAD_SECONDS = env_int("SYNC_SPREAD_SECONDS", 120, minimum=0)
CREDENTIAL_GRACE_HOURS = env_int("CREDENTIAL_GRACE_HOURS", 24, minimum=0)
# --- Staff sign-in with Microsoft Entra ID (docs/sso.md) -----------------------------------
SSO_ENABLED = env_bool("SSO_ENABLED", False)
# The same tenant as the integration unless told otherwise; its GUID (tokens carry it as tid).
SSO_TENANT_ID = env_str("SSO_TENANT_ID", MICROSOFT_TENANT_ID)
SSO_AUTHORITY_HOST = env_str("SSO_AUTHORITY_HOST", MICROSOFT_AUTHORITY_HOST).rstrip("/")
# Empty: the integration's registration (and its active client secret) signs people in too.
SSO_CLIENT_ID = env_str("SSO_CLIENT_ID", MICROSOFT_CLIENT_ID)
SSO_CLIENT_SECRET = env_secret("SSO_CLIENT_SECRET")
# Empty: built from the request (https://<host>/login/microsoft/callback).
SSO_REDIRECT_URI = env_str("SSO_REDIRECT_URI")
SSO_PROMPT = env_str("SSO_PROMPT", "select_account")
SSO_ROLE_RECHECK_MINUTES = env_int("SSO_ROLE_RECHECK_MINUTES", 15, minimum=1, maximum=1440)
SSO_TRUST_ENTRA_MFA = env_bool("SSO_TRUST_ENTRA_MFA", False)
SSO_ONLY = env_bool("SSO_ONLY", False)
SSO_BREAK_GLASS_ACCOUNTS = env_list("SSO_BREAK_GLASS_ACCOUNTS")


def _role_pairs(name: str, default: list[str], key_is_role: bool) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in env_list(name, default):
        left, sep, right = (part.strip() for part in item.partition("="))
        role = left if key_is_role else right
        if not sep or not left or not right or role not in ROLES:
            shape = "role=AppRoleValue" if key_is_role else "group-object-id=role"
            raise ImproperlyConfigured(
                f"{name} entries look like {shape} with a role among "
                f"{', '.join(ROLES)}; {item!r} is not one."
            )
        pairs[left] = right
    return pairs


# portal role -> the app role's value on the registration ("Portal.Viewer", ...).
SSO_APP_ROLES = _role_pairs(
    "SSO_APP_ROLES",
    [
        "viewer=Portal.Viewer",
        "support=Portal.Support",
        "operator=Portal.Operator",
        "admin=Portal.Admin",
    ],
    key_is_role=True,
)
# Entra group object id -> portal role (optional; needs the groups claim on the registration).
SSO_GROUP_ROLE_MAP = _role_pairs("SSO_GROUP_ROLE_MAP", [], key_is_role=False)
if SSO_ENABLED and not (SSO_TENANT_ID and SSO_CLIENT_ID):
    raise ImproperlyConfigured(
        "SSO_ENABLED needs SSO_TENANT_ID and SSO_CLIENT_ID (or the "
        "integration's MICROSOFT_TENANT_ID and MICROSOFT_CLIENT_ID)."
    )

EMULATOR_PORT = env_int("EMULATOR_PORT", 8443, minimum=1, maximum=65535)
EMULATOR_STATE_DIR = Path(env_str("EMULATOR_STATE_DIR", str(BASE_DIR / ".emulator")))
# runportal (make run): a worker that exits sooner than this after its start is failing to
# start, and runportal stops instead of starting it again in a loop.
RUNPORTAL_WORKER_MIN_UPTIME_SECONDS = env_float(
    "RUNPORTAL_WORKER_MIN_UPTIME_SECONDS", 30, minimum=0.0
)


def _is_loopback_url(url: str) -> bool:
    return (urlsplit(url).hostname or "") in {"127.0.0.1", "localhost", "::1"}


# Tokens from one and Graph calls to the other: either on loopback is the emulator (a real
# authority with a loopback Graph URL would hand real tokens to a local process).
_EMULATED = [
    name
    for name, url in (
        ("MICROSOFT_AUTHORITY_HOST", MICROSOFT_AUTHORITY_HOST),
        ("MICROSOFT_GRAPH_URL", MICROSOFT_GRAPH_URL),
    )
    if _is_loopback_url(url)
]
USING_EMULATOR = bool(_EMULATED)
if USING_EMULATOR and not MICROSOFT_ALLOW_EMULATOR:
    raise ImproperlyConfigured(
        f"{' and '.join(_EMULATED)} point{'s' if len(_EMULATED) == 1 else ''} at a local "
        "Graph emulator while DEBUG is off. "
        "Set MICROSOFT_ALLOW_EMULATOR=true if that is really intended."
    )
TENANT_LABEL = env_str("TENANT_LABEL", "Demo tenant (emulator)" if USING_EMULATOR else "")
# Benchmarks only (bench/soak): a file holding seconds that portal.lib.clock adds to "now" for
# subscription lifetimes, renewals and schedule slots, following the emulator's moved clock.
# Against real Graph that would renew late and let subscriptions lapse, so it is refused.
SIMULATED_CLOCK_FILE = env_str("SIMULATED_CLOCK_FILE")
if SIMULATED_CLOCK_FILE and not USING_EMULATOR:
    raise ImproperlyConfigured(
        "SIMULATED_CLOCK_FILE is only for benchmarks against the local Graph emulator."
    )

# --- Internationalisation, static files ---------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# In development WhiteNoise serves straight from the apps' static folders.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Tracing (docs/tracing.md) -------------------------------------------------------------
# OpenTelemetry over OTLP/HTTP, e.g. http://otel-collector:4318; empty: no tracing at all.
OTEL_EXPORTER_OTLP_ENDPOINT = env_str("OTEL_EXPORTER_OTLP_ENDPOINT", "")
OTEL_SERVICE_NAME = env_str("OTEL_SERVICE_NAME", "fleet-graph-portal")

# --- Logging ------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}."
    )
# json: one object per line (production); text: readable lines (development).
LOG_FORMAT = env_str("LOG_FORMAT", "text" if DEBUG else "json")
if LOG_FORMAT not in {"json", "text"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "portal.lib.logging.ContextFilter"}},
    "formatters": {
        "json": {"()": "portal.lib.logging.JsonFormatter"},
        "text": {
            "()": "portal.lib.logging.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "axes": {"level": "WARNING"},
    },
}
