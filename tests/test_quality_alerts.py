"""Alert delivery to a webhook: Slack-compatible body, retries, a dead endpoint."""

from __future__ import annotations

from datetime import UTC, datetime

from infra.config import Settings
from infra.process import free_port
from quality.alerts import AlertPublisher, WebhookSender
from quality.models import Alert
from tests.quality_webhook import WebhookReceiver


def alert(check: str = "probs_sum_to_one", status: str = "firing") -> Alert:
    at = datetime.now(UTC)
    return Alert(
        status=status,  # type: ignore[arg-type]
        table="labels",
        check=check,
        severity="critical",
        summary=f"[critical] labels.{check} failed on batch of 40 rows",
        batch_id="labels@0-40/1",
        sample_rows=[{"partition": 0, "offset": 3, "impression_id": "imp-3"}],
        failing_since=at,
        at=at,
    )


def test_webhook_gets_slack_json_and_retries_server_errors() -> None:
    with WebhookReceiver(fail_first=2) as hook:
        sender = WebhookSender(hook.url, timeout_s=2.0, retries=3, backoff_s=0.01)
        sender.send(alert())
        sender.close(timeout_s=10)
        assert hook.attempts == 3 and sender.sent == 1
        (body,) = hook.bodies
        assert body["text"].startswith("[critical] labels.probs_sum_to_one")
        block = body["blocks"][0]
        assert block["type"] == "section" and block["text"]["type"] == "mrkdwn"
        assert "impression_id=imp-3" in block["text"]["text"]


def test_gives_up_after_the_retries_and_goes_on() -> None:
    with WebhookReceiver(fail_first=100) as hook:
        sender = WebhookSender(hook.url, timeout_s=2.0, retries=2, backoff_s=0.01)
        sender.send(alert("a"))
        sender.send(alert("b"))
        sender.close(timeout_s=10)
        assert hook.attempts == 6 and sender.failed == 2 and sender.sent == 0


def test_unreachable_webhook_does_not_raise(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Nothing listens on this port; the publisher logs and carries on.
    url = f"http://127.0.0.1:{free_port()}/nothing"
    sender = WebhookSender(url, timeout_s=1.0, retries=1, backoff_s=0.01)
    sender.send(alert())
    sender.close(timeout_s=10)
    assert sender.failed == 1


def test_publisher_without_webhook_or_alerts_touches_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    publisher = AlertPublisher(Settings(state_dir=tmp_path))
    publisher.publish([])
    assert publisher.webhook is None and publisher._producer is None
    publisher.close()
