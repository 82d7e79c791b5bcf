"""/metrics in Prometheus' text format, computed at scrape time from the database.

Every value comes from a bounded, indexed query (the last hour of Graph calls, the
non-succeeded jobs, the active subscriptions), never a scan of a whole big table, so a
scrape stays cheap however large the history grows. Windowed figures are gauges
("…_last_hour"); the rules in deploy/prometheus/alerts.yml use them directly.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from integrations.microsoft.models import (
    Credential,
    GraphCall,
    NotificationAnswers,
    NotificationInbox,
    OutboundMessage,
    Probe,
    Subscription,
    SyncState,
    WebhookRejection,
)
from portal.access.addresses import from_api_trusted_network
from portal.access.decorators import public
from portal.alerts.models import Alert, AuditChainCheck, TokenHealth
from portal.approvals.models import ApprovalRequest
from portal.audit.models import AuditStreamCursor
from portal.events.models import EventEndpoint
from portal.jobs.liveness import worker_heartbeat_age
from portal.jobs.models import Job, JobAttempt

LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000)
HOUR = timedelta(hours=1)


class PortalCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from self._graph()
        yield from self._jobs()
        yield from self._notifications()
        yield from self._subscriptions()
        yield from self._sync()
        yield from self._probe()
        yield from self._health()
        yield from self._gateway()
        yield from self._audit_stream()

    def _audit_stream(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "fleet_audit_stream_lag_seconds",
            "Age of the oldest audit record not yet shipped to a sink (0: none waits)",
            labels=["sink"],
        )
        pending = GaugeMetricFamily(
            "fleet_audit_stream_pending", "Audit records not yet shipped to a sink", labels=["sink"]
        )
        for figure in AuditStreamCursor.objects.lags(settings.AUDIT_STREAM_SINKS):
            lag.add_metric([figure.sink], figure.lag_seconds)
            pending.add_metric([figure.sink], figure.pending)
        yield lag
        yield pending

    def _gateway(self) -> Iterator[GaugeMetricFamily]:
        approvals = ApprovalRequest.objects.figures()
        figures = (
            (
                "fleet_messages_failed_last_hour",
                "Outbound messages that failed in the last hour",
                OutboundMessage.objects.failed_last_hour(),
            ),
            (
                "fleet_messages_failed_window",
                "Outbound messages that failed in the alert window (ALERT_WINDOW_SECONDS)",
                OutboundMessage.objects.failed_within(settings.ALERT_WINDOW_SECONDS),
            ),
            (
                "fleet_oldest_queued_message_seconds",
                "Age of the oldest unsent message (0: none)",
                OutboundMessage.objects.oldest_unsent_seconds() or 0,
            ),
            (
                "fleet_event_endpoints_failing",
                "Event endpoints failing or disabled",
                EventEndpoint.objects.failing().count(),
            ),
            (
                "fleet_event_backlog",
                "Events waiting for delivery to endpoints",
                EventEndpoint.objects.backlog(),
            ),
            (
                "fleet_approvals_pending",
                "Approval requests waiting for a second person (not expired)",
                approvals["pending"],
            ),
            (
                "fleet_approvals_break_glass_unreviewed",
                "Covered actions run without approval (break glass) not yet reviewed",
                approvals["break_glass_unreviewed"],
            ),
        )
        for name, documentation, value in figures:
            family = GaugeMetricFamily(name, documentation)
            family.add_metric([], value)
            yield family

    def _graph(self) -> Iterator[Metric]:
        recent = GraphCall.objects.last_hours(1)
        calls = GaugeMetricFamily(
            "fleet_graph_calls_last_hour",
            "Graph calls in the last hour by route and status",
            labels=["route", "status"],
        )
        throttled = GaugeMetricFamily(
            "fleet_graph_throttled_last_hour",
            "Graph 429 answers in the last hour by route",
            labels=["route"],
        )
        for route, status, is_throttled, n in (
            recent.values_list("route", "status", "throttled").annotate(n=Count("id")).order_by()
        ):
            calls.add_metric([route, str(status or "none")], n)
            if is_throttled:
                throttled.add_metric([route], n)
        yield calls
        yield throttled
        figures = recent.figures()
        failed = GaugeMetricFamily(
            "fleet_graph_failed_last_hour",
            "Graph calls in the last hour that failed (no answer, 4xx, 5xx)",
        )
        failed.add_metric([], figures.failed)
        yield failed
        total = GaugeMetricFamily("fleet_graph_total_last_hour", "Graph calls in the last hour")
        total.add_metric([], figures.total)
        yield total
        aggregates = recent.aggregate(
            **{
                f"le_{bound}": Count("id", filter=Q(duration_ms__lte=bound))
                for bound in LATENCY_BUCKETS_MS
            },
            total=Count("id"),
            sum_ms=Sum("duration_ms"),
        )
        buckets = [
            (str(float(bound) / 1000), aggregates[f"le_{bound}"]) for bound in LATENCY_BUCKETS_MS
        ] + [("+Inf", aggregates["total"])]
        window = GraphCall.objects.last_seconds(settings.ALERT_WINDOW_SECONDS).figures()
        for name, documentation, value in (
            ("fleet_alert_window_seconds", "The window of the *_window figures", None),
            ("fleet_graph_total_window", "Graph calls in the alert window", window.total),
            (
                "fleet_graph_unavailable_window",
                "Graph calls in the alert window answered 5xx or not at all",
                window.unavailable,
            ),
            (
                "fleet_graph_throttled_window",
                "Graph 429 answers in the alert window",
                window.throttled,
            ),
        ):
            family = GaugeMetricFamily(name, documentation)
            family.add_metric([], settings.ALERT_WINDOW_SECONDS if value is None else value)
            yield family
        yield GaugeHistogramMetricFamily(
            "fleet_graph_latency_seconds_last_hour",
            "Graph call latency over the last hour",
            buckets=buckets,
            gsum_value=(aggregates["sum_ms"] or 0) / 1000,
        )

    def _jobs(self) -> Iterator[GaugeMetricFamily]:
        by_state = GaugeMetricFamily(
            "fleet_jobs", "Jobs by state (succeeded jobs are left out)", labels=["state", "type"]
        )
        for job_type, counts in Job.objects.active_counts_by_type().items():
            for status, n in counts.items():
                by_state.add_metric([status, job_type], n)
        yield by_state
        queue = GaugeMetricFamily("fleet_queue_length", "Jobs due and not started")
        queue.add_metric([], Job.objects.queue_length())
        yield queue
        oldest = GaugeMetricFamily(
            "fleet_oldest_due_job_seconds",
            "How long the longest-waiting due job has been due (0: none)",
        )
        oldest.add_metric([], Job.objects.oldest_due_seconds() or 0)
        yield oldest
        dead = GaugeMetricFamily("fleet_dead_letters", "Jobs in the dead-letter queue")
        dead.add_metric([], Job.objects.dead_letters())
        yield dead
        outcomes = GaugeMetricFamily(
            "fleet_job_attempts_last_hour",
            "Job attempts finished in the last hour by outcome",
            labels=["outcome"],
        )
        since = timezone.now() - HOUR
        for outcome, n in (
            JobAttempt.objects.filter(finished_at__gte=since)
            .values_list("outcome")
            .annotate(n=Count("id"))
            .order_by()
        ):
            outcomes.add_metric([outcome], n)
        yield outcomes

    def _notifications(self) -> Iterator[GaugeMetricFamily]:
        since = timezone.now() - HOUR
        received = GaugeMetricFamily(
            "fleet_notifications_last_hour",
            "Change notifications stored in the last hour by status",
            labels=["status"],
        )
        for status, n in (
            NotificationInbox.objects.filter(received_at__gte=since)
            .values_list("status")
            .annotate(n=Count("id"))
            .order_by()
        ):
            received.add_metric([status], n)
        yield received
        pending = GaugeMetricFamily(
            "fleet_inbox_pending", "Change notifications waiting for the inbox drain"
        )
        pending.add_metric([], NotificationInbox.objects.pending().count())
        yield pending
        oldest = GaugeMetricFamily(
            "fleet_inbox_oldest_seconds",
            "Age of the oldest notification the drain has not processed (0: none)",
        )
        oldest.add_metric([], NotificationInbox.objects.oldest_pending_seconds() or 0)
        yield oldest
        answers = NotificationAnswers.objects.figures()
        answered = GaugeMetricFamily(
            "fleet_notification_answers_last_ten_minutes",
            "Notification requests the receiver answered in the last 10 minutes",
        )
        answered.add_metric([], answers.answered)
        yield answered
        slow = GaugeMetricFamily(
            "fleet_notification_answers_slow_last_ten_minutes",
            "Of those, answered slower than NOTIFICATION_SLOW_ANSWER_SECONDS",
        )
        slow.add_metric([], answers.slow)
        yield slow
        invalid = GaugeMetricFamily(
            "fleet_notifications_rejected_today",
            "Notifications refused today (unknown subscription, wrong clientState)",
            labels=["reason"],
        )
        for reason, n in (
            WebhookRejection.objects.filter(day=timezone.now().date())
            .values_list("reason")
            .annotate(n=Sum("count"))
            .order_by()
        ):
            invalid.add_metric([reason], n)
        yield invalid

    def _subscriptions(self) -> Iterator[GaugeMetricFamily]:
        by_state = GaugeMetricFamily(
            "fleet_subscriptions", "Webhook subscriptions by state", labels=["state"]
        )
        for state, n in Subscription.objects.counts_by_state().items():
            by_state.add_metric([state], n)
        yield by_state
        soonest = _seconds(Subscription.objects.soonest_expiry_in())
        expiry = GaugeMetricFamily(
            "fleet_subscription_soonest_expiry_seconds",
            "Seconds until the soonest active subscription expires",
        )
        if soonest is not None:
            expiry.add_metric([], soonest)
        yield expiry
        missing, longest_seconds = Subscription.objects.missing_figures()
        count = GaugeMetricFamily(
            "fleet_subscriptions_missing",
            "Subscriptions Graph no longer has that are not recreated yet",
        )
        count.add_metric([], missing)
        yield count
        longest = GaugeMetricFamily(
            "fleet_subscription_missing_longest_seconds",
            "How long the longest-missing subscription has been missing in Graph (0: none)",
        )
        longest.add_metric([], longest_seconds or 0)
        yield longest

    def _probe(self) -> Iterator[GaugeMetricFamily]:
        by_channel = Probe.objects.figures_by_channel()
        stages = GaugeMetricFamily(
            "fleet_probe_stage_seconds",
            "The latest finished end-to-end probe per channel: seconds from the start of "
            "sending (send) or from the accepted send (notification, delta) to each stage",
            labels=["channel", "stage"],
        )
        arrived = GaugeMetricFamily(
            "fleet_probe_notification_arrived",
            "1 when the latest finished probe's notification arrived, 0 when it did not",
            labels=["channel"],
        )
        for channel, figures in by_channel.items():
            for stage, value in (
                ("send", figures.send_seconds),
                ("notification", figures.notification_seconds),
                ("delta", figures.delta_seconds),
            ):
                if value is not None:
                    stages.add_metric([channel, stage], value)
            arrived.add_metric([channel], float(figures.status == Probe.Status.MEASURED))
        yield stages
        yield arrived

    def _sync(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "fleet_sync_lag_seconds",
            "Seconds since the least recently synced user's last success",
            labels=["resource_type"],
        )
        failed = GaugeMetricFamily(
            "fleet_sync_failed", "Sync states whose last run failed", labels=["resource_type"]
        )
        for kind, health in SyncState.objects.health_by_kind().items():
            if health["lag_seconds"] is not None:
                lag.add_metric([kind], health["lag_seconds"])
            failed.add_metric([kind], health["failed"])
        yield lag
        yield failed

    def _health(self) -> Iterator[GaugeMetricFamily]:
        secret = GaugeMetricFamily(
            "fleet_client_secret_expiry_seconds", "Seconds until the active client secret expires"
        )
        seconds = _seconds(Credential.objects.active_expires_in())
        if seconds is not None:
            secret.add_metric([], seconds)
        yield secret
        refused = GaugeMetricFamily(
            "fleet_token_refused",
            "1 while the identity platform refuses the active credential (label: AADSTS code)",
            labels=["code"],
        )
        refusal = TokenHealth.objects.active_refusal()
        refused.add_metric(
            [str(refusal.failure_code or refusal.failure_error) if refusal else ""],
            1 if refusal else 0,
        )
        yield refused
        worker = GaugeMetricFamily(
            "fleet_worker_heartbeat_age_seconds", "Seconds since a worker last reported"
        )
        age = worker_heartbeat_age()
        if age is not None:
            worker.add_metric([], age)
        yield worker
        chain = GaugeMetricFamily(
            "fleet_audit_chain_ok", "1 if the last audit chain verification passed"
        )
        ok = AuditChainCheck.objects.latest_ok()
        if ok is not None:
            chain.add_metric([], 1 if ok else 0)
        yield chain
        alerts = GaugeMetricFamily(
            "fleet_alert_firing", "1 while the portal's own rule fires", labels=["rule"]
        )
        for rule, state in Alert.objects.values_list("rule", "state"):
            alerts.add_metric([rule], 1 if state == Alert.State.FIRING else 0)
        yield alerts


def _seconds(duration: timedelta | None) -> float | None:
    return duration.total_seconds() if duration is not None else None


def _authorised(request: HttpRequest) -> bool:
    expected = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if expected and header.lower().startswith("bearer "):
        return hmac.compare_digest(header[7:].strip().encode(), expected.encode())
    return from_api_trusted_network(request)


@public  # guarded by METRICS_TOKEN or API_TRUSTED_NETWORKS, as Prometheus cannot sign in
def metrics(request: HttpRequest) -> HttpResponse:
    if not _authorised(request):
        return JsonResponse(
            {
                "error": "unauthorized",
                "detail": "Send the metrics token or scrape from a trusted network.",
            },
            status=401,
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    return HttpResponse(
        generate_latest(registry), content_type="text/plain; version=0.0.4; charset=utf-8"
    )
