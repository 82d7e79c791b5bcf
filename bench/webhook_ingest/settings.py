"""The portal's settings plus a baseline endpoint, for the webhook ingest benchmark only."""

from bench.settings import *  # noqa: F403

ROOT_URLCONF = "bench.webhook_ingest.urls"
