"""Alerts: when to send (grouping, rate limit, recovery) and where (topic, log, webhook).

Per (table, check): the first failure sends a `firing` alert; further failures within
`quality.alert_repeat_s` are only counted, and the next alert after that window carries
the count; the first pass after a failure sends `resolved` with the count of failures
not yet reported. A check that was skipped (too few rows, no reference yet) changes
nothing. Delivery never fails a commit: the rows and results are already in Iceberg, so
an unreachable topic or webhook is logged and the batch goes on.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from infra.config import Settings
from quality.models import Alert

log = logging.getLogger(__name__)

Decision = tuple[Literal["firing", "resolved"], int, datetime]
KAFKA_RETRY_S = 60.0


@dataclass
class _Firing:
    since: datetime
    last_sent: float
    # Failures seen since the last alert that went out.
    folded: int = 0


class AlertManager:
    """Grouping, rate limiting and recovery of alerts, per (table, check)."""

    def __init__(self, repeat_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.repeat_s = repeat_s
        self.clock = clock
        self._firing: dict[tuple[str, str], _Firing] = {}

    def restore(self, table: str, check: str, since: datetime) -> None:
        """A check found failing in `dq_results` at start: its alert already went out."""
        self._firing.setdefault((table, check), _Firing(since=since, last_sent=self.clock()))

    def is_firing(self, table: str, check: str) -> bool:
        return (table, check) in self._firing

    def observe(self, table: str, check: str, failed: bool) -> Decision | None:
        """What to send, if anything, for this batch's verdict on (table, check)."""
        key = (table, check)
        now = self.clock()
        state = self._firing.get(key)
        if failed:
            if state is None:
                state = self._firing[key] = _Firing(since=datetime.now(UTC), last_sent=now)
                return ("firing", 1, state.since)
            state.folded += 1
            if now - state.last_sent >= self.repeat_s:
                repeats, state.folded, state.last_sent = state.folded, 0, now
                return ("firing", repeats, state.since)
            return None
        if state is None:
            return None
        del self._firing[key]
        return ("resolved", state.folded, state.since)


def slack_body(alert: Alert) -> dict[str, Any]:
    """Slack incoming-webhook JSON (plain `text` for clients that ignore blocks)."""
    icon = {"firing": ":rotating_light:" if alert.severity == "critical" else ":warning:"}.get(
        alert.status, ":white_check_mark:"
    )
    lines = [f"{icon} *{alert.table}.{alert.check}* ({alert.severity}, {alert.status})"]
    lines.append(alert.summary)
    for row in alert.sample_rows:
        lines.append("• " + ", ".join(f"{k}={v}" for k, v in row.items()))
    return {
        "text": alert.summary,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}],
    }


class _Refused(Exception):
    """One webhook attempt that did not land: `problem` says why; `final` when a retry
    cannot help (the endpoint refused the request itself)."""

    def __init__(self, problem: str, final: bool = False) -> None:
        super().__init__(problem)
        self.problem = problem
        self.final = final


class WebhookSender:
    """Posts alerts from a background thread: a slow webhook never holds up a commit."""

    def __init__(self, url: str, timeout_s: float, retries: int, backoff_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.sent = 0
        self.failed = 0
        self._queue: queue.Queue[Alert | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="dq-webhook", daemon=True)
        self._thread.start()

    def send(self, alert: Alert) -> None:
        self._queue.put(alert)

    def _work(self) -> None:
        while (alert := self._queue.get()) is not None:
            if self._post(alert):
                self.sent += 1
            else:
                self.failed += 1
            self._queue.task_done()
        self._queue.task_done()

    def _post(self, alert: Alert) -> bool:
        body = json.dumps(slack_body(alert), default=str).encode("utf-8")
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, _Refused) and not exc.final),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.backoff_s),  # backoff_s, doubling
            reraise=True,
        )
        try:
            retrying(self._post_once, body)
        except _Refused as exc:
            log.error(
                "dq webhook %s refused alert %s (%s) after %d attempt(s): %s; check "
                "quality.webhook_url",
                self.url,
                alert.key,
                alert.status,
                retrying.statistics["attempt_number"],
                exc.problem,
            )
            return False
        return True

    def _post_once(self, body: bytes) -> None:
        try:
            with requests.post(
                self.url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout_s,
            ) as response:
                status = response.status_code
        except (requests.RequestException, OSError) as exc:
            raise _Refused(str(exc)) from exc
        if not 200 <= status < 300:
            # Below 500 (but 429) the request itself is wrong; retrying will not help.
            raise _Refused(f"HTTP {status}", final=status < 500 and status != 429)

    def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until every queued alert was posted or given up."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self, timeout_s: float) -> None:
        self.drain(timeout_s)
        self._queue.put(None)
        self._thread.join(timeout=1.0)


class AlertPublisher:
    """Sends alerts to the log, the `quality.alerts_topic` topic and the webhook."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        cfg = settings.quality
        self._producer: Any = None
        # After a failed send, the topic is skipped (alerts still logged) until then: a
        # broker that is down would otherwise hold every batch for a client timeout.
        self._kafka_retry_at = 0.0
        self.webhook = (
            WebhookSender(
                cfg.webhook_url, cfg.webhook_timeout_s, cfg.webhook_retries, cfg.webhook_backoff_s
            )
            if cfg.webhook_url
            else None
        )

    def _kafka(self) -> Any:
        if self._producer is None:
            from infra.kafka_io import producer
            from infra.topics import ensure_topics

            ensure_topics(self.settings, [self.settings.quality.alerts_topic])
            self._producer = producer(self.settings)
        return self._producer

    def publish(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            level = logging.INFO if alert.status == "resolved" else logging.WARNING
            if alert.status == "firing" and alert.severity == "critical":
                level = logging.ERROR
            log.log(level, "dq alert %s", alert.summary)
            if self.webhook is not None:
                self.webhook.send(alert)
        if not alerts:
            return
        topic = self.settings.quality.alerts_topic
        if time.monotonic() < self._kafka_retry_at:
            log.error("dq alert topic %s unreachable: %d alert(s) only logged", topic, len(alerts))
            return
        try:
            kafka = self._kafka()
            futures = [
                kafka.send(topic, key=a.key.encode(), value=a.model_dump_json().encode())
                for a in alerts
            ]
            kafka.flush(timeout=10)
            for future in futures:
                future.get(timeout=10)
        except Exception as exc:  # the batch's rows and results are safe in Iceberg
            self._kafka_retry_at = time.monotonic() + KAFKA_RETRY_S
            log.error(
                "could not send %d dq alert(s) to topic %s at %s: %s; retrying the topic "
                "in %.0f s, until then alerts go to the log (and webhook) only",
                len(alerts),
                topic,
                self.settings.broker.bootstrap,
                exc,
                KAFKA_RETRY_S,
            )

    def close(self) -> None:
        cfg = self.settings.quality
        if self.webhook is not None:
            per_alert = (cfg.webhook_retries + 1) * cfg.webhook_timeout_s
            self.webhook.close(timeout_s=per_alert + 5.0)
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
