"""bench/webhook_ingest's settings with the tracing code path removed from the receiver: the
baseline that shows what tracing costs when it is off (nothing, the bench prints the ratio)."""

from bench.webhook_ingest.settings import *  # noqa: F403

ROOT_URLCONF = "bench.webhook_ingest.urls_untraced"
