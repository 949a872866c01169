"""Socket Mode end to end: serve() opens a connection through apps.connections.open on the Slack Web API
stand-in, a loopback WebSocket stand-in pushes a slash command envelope, and the answer comes back as the
envelope's acknowledgement, as in Slack. /healthz is served beside it."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.app import App, build_app
from bot.config import Environment, environment_from
from bot.errors import BotError
from bot.slackapp import serve
from tests.conftest import SAMPLE_FEED, Clock
from tests.slack_standin import SlackStandIn
from tests.socket_standin import SocketModeStandIn, running_socket_mode

CHIPS = "C0CHIPS01"
ALICE = "U0ALICE01"


@pytest.fixture
def socket_mode() -> Iterator[SocketModeStandIn]:
    with running_socket_mode() as standin:
        yield standin


def socket_mode_app(
    tmp_path: Path, slack: SlackStandIn, clock: Clock, app_token: str
) -> tuple[App, Environment]:
    """The bot in Socket Mode, on the bundled feed, with #chips watching Nexperia."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"feeds:\n  - id: scmp\n    url: {SAMPLE_FEED}\n"
        f"channels:\n  - channel: {CHIPS}\n    keywords: [Nexperia]\n"
    )
    environ = {
        "SLACK_BOT_TOKEN": slack.state.token,
        "SLACK_API_URL": slack.url,
        "SLACK_APP_TOKEN": app_token,
        "BOT_RULES": str(rules),
        "BOT_DB": str(tmp_path / "state.json"),
        "PORT": "0",
        "METRICS_PORT": "0",
    }
    env = environment_from(environ, tmp_path)
    return build_app(env, sleep=clock.sleep, now=clock), env


def test_a_slash_command_over_socket_mode_subscribes_and_answers_in_the_ack(
    tmp_path: Path, slack: SlackStandIn, clock: Clock, socket_mode: SocketModeStandIn
) -> None:
    slack.add_channel(CHIPS, "chips")
    slack.state.socket_url = socket_mode.url
    app, env = socket_mode_app(tmp_path, slack, clock, slack.state.app_token)
    try:
        serving = serve(app, env, host="127.0.0.1")
        try:
            ack = socket_mode.request(
                {
                    "envelope_id": "e1",
                    "type": "slash_commands",
                    "accepts_response_payload": True,
                    "payload": {
                        "command": "/feeds",
                        "text": "subscribe Huawei",
                        "channel_id": CHIPS,
                        "channel_name": "chips",
                        "user_id": ALICE,
                        "team_id": "T1",
                        "response_url": slack.response_url(),
                        "trigger_id": "t1",
                    },
                }
            )
            assert serving.detail is not None
            health_url = f"http://127.0.0.1:{serving.detail.port}/healthz"
            with urllib.request.urlopen(health_url, timeout=10) as answer:
                health_status, health = answer.status, json.loads(answer.read())
        finally:
            serving.stop()
    finally:
        app.close()

    assert slack.calls("apps.connections.open")
    assert socket_mode.connections == 1
    assert "now gets alerts for `Huawei`" in ack["payload"]["text"]
    [subscription] = app.store.subscriptions(CHIPS)
    assert (subscription.term, subscription.added_by) == ("Huawei", ALICE)
    assert health_status == 200
    assert health["status"] == "ok"
    assert list(health["feeds"]) == ["scmp"]


@pytest.mark.parametrize(
    ("app_token", "socket_url", "problem"),
    [
        ("xapp-wrong", "ws://unused", "Slack refused SLACK_APP_TOKEN (invalid_auth)"),
        ("xapp-test-token", None, "Socket Mode is off for this app"),
    ],
)
def test_a_socket_mode_start_slack_refuses_is_one_clear_error(
    tmp_path: Path, slack: SlackStandIn, clock: Clock, app_token: str, socket_url: str | None, problem: str
) -> None:
    slack.state.socket_url = socket_url
    app, env = socket_mode_app(tmp_path, slack, clock, app_token)
    try:
        with pytest.raises(BotError) as raised:
            serve(app, env, host="127.0.0.1")
    finally:
        app.close()
    assert str(raised.value).startswith(problem)
    assert app_token not in str(raised.value)
