"""The Acknowledge and Mute buttons refuse a press whose payload names another channel than the alert's:
signed block_actions requests to the real endpoint, as a crafted payload would arrive."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.blocks import mute_button
from bot.model import ChannelMatch, ChannelRule, Item, Subscription
from bot.slackapp import NOT_THIS_CHANNELS_ALERT
from tests.conftest import Clock
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn
from tests.test_oncall import POLICY, OnCallWorld, ack_button, replies
from tests.test_slack_app import BOB, CHINA, HUAWEI_NEWS, OTHER, Bot, reply_text, start_bot, wait_for


def answers(bot: Bot) -> list[str]:
    return [reply_text(answer) for answer in bot.slack.responses]


@pytest.fixture
def oncall(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> OnCallWorld:
    slack.add_channel(OTHER, "other")
    return OnCallWorld(tmp_path, feed_host, slack, clock)


@pytest.fixture
def oncall_bot(oncall: OnCallWorld) -> Iterator[Bot]:
    yield from oncall.start()


@pytest.fixture
def bot(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> Iterator[Bot]:
    yield from start_bot(tmp_path, feed_host, slack, clock)


def test_an_alert_cannot_be_acknowledged_from_a_payload_naming_another_channel(
    oncall: OnCallWorld, oncall_bot: Bot
) -> None:
    bot = oncall_bot
    alert = copy.deepcopy(oncall.alert(bot))
    forged = {**alert, "channel": OTHER}  # the same button, the payload saying it was pressed in #other
    assert bot.press_button(forged, "ack_alert", user=BOB).status_code == 200
    wait_for(lambda: bot.slack.responses or bot.slack.calls("chat.update"))
    assert answers(bot) == [NOT_THIS_CHANNELS_ALERT]
    assert bot.slack.calls("chat.update") == []
    [still_open] = bot.app.store.open_alerts(POLICY)
    assert still_open.acked_by is None
    bot.clock.advance(minutes=31)
    assert bot.app.tick() == 1 and len(replies(bot.slack, alert)) == 1  # it escalates, unacknowledged

    bot.press_button(alert, "ack_alert", user=BOB)  # from its own channel: acknowledged
    wait_for(lambda: bot.slack.calls("chat.update"))
    assert ack_button(bot.slack.posts_to(POLICY)[0]) is None


def test_a_topic_cannot_be_muted_from_a_payload_naming_another_channel(bot: Bot) -> None:
    bot.say("subscribe Huawei", channel=CHINA)
    bot.publish(HUAWEI_NEWS)
    bot.poll()
    [alert] = bot.slack.posts_to(CHINA)
    bot.say("subscribe Huawei", channel=OTHER, user=BOB)  # #other's own topic, no alert there yet

    forged = {**alert, "channel": OTHER}
    assert bot.press(forged).status_code == 200
    wait_for(lambda: len(bot.slack.responses) == 1)
    assert answers(bot) == [NOT_THIS_CHANNELS_ALERT]
    assert [s.term for s in bot.app.store.subscriptions(OTHER)] == ["Huawei"]

    # A value that names no alert at all (no key) is refused the same way, even in the alert's channel.
    keyless = copy.deepcopy(alert)
    [button] = [e for b in keyless["blocks"] if b["type"] == "actions" for e in b["elements"]]
    button["value"] = json.dumps({**json.loads(button["value"]), "key": ""})
    bot.press(keyless)
    wait_for(lambda: len(bot.slack.responses) == 2)
    assert answers(bot)[1] == NOT_THIS_CHANNELS_ALERT
    assert [s.term for s in bot.app.store.subscriptions(CHINA)] == ["Huawei"]

    bot.press(alert)  # from its own channel: muted there, and only there
    wait_for(lambda: len(bot.slack.responses) == 3)
    assert "Muted `Huawei` here" in answers(bot)[2]
    assert bot.app.store.subscriptions(CHINA) == []
    assert [s.term for s in bot.app.store.subscriptions(OTHER)] == ["Huawei"]


def test_a_mute_button_with_more_terms_than_its_value_holds_still_names_its_alert() -> None:
    """Slack caps a button's value at 2,000 characters: terms are dropped to fit, never the alert's key,
    which the press is checked against."""
    terms = tuple(f"semiconductor-topic-{n:03}" for n in range(120))
    at = datetime(2026, 6, 1, tzinfo=UTC)
    rules = tuple(ChannelRule(CHINA, (t,), subscription=Subscription(CHINA, t, None, BOB, at)) for t in terms)
    item = Item("scmp", "https://www.scmp.com/tech/huawei-ai-chip", "https://www.scmp.com/x", "Title")
    button = mute_button(ChannelMatch(CHINA, item, terms, rules))
    assert button is not None
    value = json.loads(str(button["value"]))
    assert len(str(button["value"])) <= 2000 and 1 < len(value["terms"]) < len(terms)
    assert value["key"] == item.key and value["feed"] == "scmp"
