"""The bot's Prometheus metrics, served at GET /metrics on METRICS_PORT (loopback by default, not PORT).

prometheus_client writes the text exposition format (escaping, histogram buckets, `_total`/`_created`
series) the way every scraper expects, which hand-written code would only approximate. Each App has a
registry of its own, not the library's global one, so tests (many bots in one process) never share
counters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot.errors import DeliveryError
from bot.pipeline import PollReport

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# From a few seconds (posted in the cycle that found the item) to hours (held through an outage).
LATENCY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)

_SLACK_ERROR_CODE = re.compile(r"[a-z_]{1,40}")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.polls = Counter(
            "feedwatch_polls",
            "Feed polls, by feed and outcome (ok, not_modified, unchanged, error).",
            ["feed", "status"],
            registry=self.registry,
        )
        self.fetch_errors = Counter(
            "feedwatch_fetch_errors",
            "Failed polls, by feed and kind of error (timeout, http_503, too_large, parse, ...).",
            ["feed", "kind"],
            registry=self.registry,
        )
        self.items_seen = Counter(
            "feedwatch_items_seen",
            "Items whose guid had not been seen before, by feed.",
            ["feed"],
            registry=self.registry,
        )
        self.alerts_posted = Counter(
            "feedwatch_alerts_posted",
            "Alerts the destination accepted (Slack, or the terminal in console mode); each item of a "
            "grouped message (digest, quiet hours, flood) counts as one.",
            registry=self.registry,
        )
        self.alerts_failed = Counter(
            "feedwatch_alerts_failed",
            "Alert deliveries that failed, by Slack error code; each waits as pending and is retried.",
            ["error"],
            registry=self.registry,
        )
        self.items_failed = Counter(
            "feedwatch_items_failed",
            "Items skipped because matching them raised (marked seen, logged with their key), by feed.",
            ["feed"],
            registry=self.registry,
        )
        self.alerts_left_out = Counter(
            "feedwatch_alerts_left_out",
            "Alerts over what one poll may send a channel, told as 'N more' and never posted, by feed.",
            ["feed"],
            registry=self.registry,
        )
        self.alert_latency = Histogram(
            "feedwatch_alert_latency_seconds",
            "From the poll that first saw the item to the alert being posted.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._pending = Gauge(
            "feedwatch_pending_alerts", "Alerts waiting to be retried or released.", registry=self.registry
        )
        self._failing_feeds = Gauge(
            "feedwatch_failing_feeds", "Feeds whose last poll failed.", registry=self.registry
        )
        self._slack_ok = Gauge(
            "feedwatch_slack_auth_ok",
            "1 unless Slack refused the bot token at the last post (0); 1 in console mode.",
            registry=self.registry,
        )

    def watch(
        self,
        *,
        pending: Callable[[], int],
        failing_feeds: Callable[[], int],
        slack_auth_ok: Callable[[], bool],
    ) -> None:
        """Gauges read at scrape time, from the App's own state, so they are never stale."""
        self._pending.set_function(pending)
        self._failing_feeds.set_function(failing_feeds)
        self._slack_ok.set_function(lambda: 1.0 if slack_auth_ok() else 0.0)

    def observe_poll(self, report: PollReport) -> None:
        self.polls.labels(report.feed_id, report.status).inc()
        if report.status == "error":
            self.fetch_errors.labels(report.feed_id, report.error_kind or "other").inc()
        if report.new:
            self.items_seen.labels(report.feed_id).inc(report.new)
        if report.failed_items:
            self.items_failed.labels(report.feed_id).inc(report.failed_items)
        if report.left_out:
            self.alerts_left_out.labels(report.feed_id).inc(report.left_out)

    def observe_posted(self, first_seen: datetime, posted: datetime) -> None:
        self.alerts_posted.inc()
        self.alert_latency.observe(max(0.0, (posted - first_seen).total_seconds()))

    def observe_failed(self, error: DeliveryError) -> None:
        # Slack's codes are a small fixed set; anything else (an HTTP status, an exception's text) would
        # make a label value per message.
        code = error.error if _SLACK_ERROR_CODE.fullmatch(error.error) else "other"
        self.alerts_failed.labels(code).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
