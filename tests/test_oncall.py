"""On-call channels through the real endpoint: mentions resolved to user groups, the Acknowledge button
(a signed block_actions request) updating the message in place, escalations on a test clock, across a
restart, and /feeds oncall. Slack is the Web API stand-in; nothing sleeps."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from bot.app import build_app
from bot.config import environment_from
from bot.errors import BotError, ConfigError
from bot.model import ChannelMatch, ChannelRule, Escalation, Item, OnCall
from bot.oncall import AlertPolicy, OpenAlert, due_escalations, next_daily, policy_of
from bot.slackapp import serve
from tests.conftest import Clock, rss_item, scmp_feed
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn, block_problem, visible_text
from tests.test_slack_app import SECRET, Bot, reply_text, wait_for

POLICY = "C0POLICY1"
ALICE, BOB = "U0ALICE01", "U0BOB0001"
ONCALL_GROUP, LEADS_GROUP = "S0ONCALL1", "S0LEADS01"

EXPORT_NEWS = rss_item(
    "US adds chip firms to entity list",
    "https://www.scmp.com/tech/entity-list",
    published="Mon, 01 Jun 2026 08:30:00 +0000",
)


def write_rules(folder: Path, feed_url: str, mention: str = "@policy-oncall") -> Path:
    path = folder / "rules.yaml"
    path.write_text(
        f"""settings:
  backfill: 0
feeds:
  - id: scmp
    url: {feed_url}
channels:
  - channel: {POLICY}
    keywords: ["export control*", "entity list"]
    mention: "{mention}"
    priority: high
    escalate: {{after: 30m, to: "@policy-leads", repeat: 2}}
"""
    )
    return path


class OnCallWorld:
    def __init__(self, tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> None:
        self.tmp_path, self.feed_host, self.slack, self.clock = tmp_path, feed_host, slack, clock
        slack.add_channel(POLICY, "policy-oncall")
        slack.state.usergroups.update({"policy-oncall": ONCALL_GROUP, "policy-leads": LEADS_GROUP})
        self.feed_url = feed_host.serve("/feed", scmp_feed(drop_newest=3))
        self.rules = write_rules(tmp_path, self.feed_url)
        self.environ = {
            "SLACK_BOT_TOKEN": slack.state.token,
            "SLACK_API_URL": slack.url,
            "SLACK_SIGNING_SECRET": SECRET,
            "BOT_RULES": str(self.rules),
            "BOT_DB": str(tmp_path / "state.json"),
            "PORT": "0",
            "METRICS_PORT": "0",
        }

    def start(self) -> Iterator[Bot]:
        env = environment_from(self.environ, self.tmp_path)
        app = build_app(env, sleep=self.clock.sleep, now=self.clock, listening=True)
        serving = serve(app, env, on_resume=app.retry_pending, host="127.0.0.1")
        try:
            yield Bot(app, serving, self.slack, self.feed_host, self.clock)
        finally:
            serving.stop()
            app.close()

    def use_rules(self, channels: str, settings: str = "") -> None:
        """Replaces the on-call entry with these `channels:` entries (YAML, indented by two)."""
        self.rules.write_text(
            f"settings:\n  backfill: 0\n{settings}feeds:\n  - id: scmp\n    url: {self.feed_url}\n"
            f"channels:\n{channels}"
        )

    def alert(self, bot: Bot) -> dict:
        bot.poll()
        bot.publish(EXPORT_NEWS)
        bot.poll()
        [alert] = self.slack.posts_to(POLICY)
        return alert


@pytest.fixture
def world(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> OnCallWorld:
    return OnCallWorld(tmp_path, feed_host, slack, clock)


@pytest.fixture
def bot(world: OnCallWorld) -> Iterator[Bot]:
    yield from world.start()


def replies(slack: SlackStandIn, alert: dict) -> list[dict]:
    return [p for p in slack.posts if p.get("thread_ts") == alert["ts"]]


def ack_button(message: dict) -> dict | None:
    for block in message["blocks"]:
        for element in block.get("elements", []):
            if element.get("action_id") == "ack_alert":
                return element
    return None


def test_a_high_priority_alert_mentions_the_user_group_and_can_be_acknowledged(world, bot: Bot) -> None:
    alert = world.alert(bot)
    assert alert["text"].startswith(f"<!subteam^{ONCALL_GROUP}> 🚨 High priority: US adds chip firms")
    assert visible_text(alert["blocks"]).startswith(f"<!subteam^{ONCALL_GROUP}> *🚨 High priority*\n")
    assert ack_button(alert) is not None


def test_acknowledging_updates_the_message_in_place_and_stops_escalation(world, bot: Bot) -> None:
    alert = copy.deepcopy(world.alert(bot))  # as posted; the stand-in edits its record in place
    bot.clock.advance(minutes=5)
    assert bot.press_button(alert, "ack_alert", user=BOB).status_code == 200
    wait_for(lambda: world.slack.calls("chat.update"))
    [updated] = world.slack.posts_to(POLICY)
    assert updated["ts"] == alert["ts"] and updated.get("edited")
    assert f"✅ Acknowledged by <@{BOB}>" in reply_text(updated)
    assert ack_button(updated) is None

    bot.clock.advance(hours=3)
    assert bot.app.tick() == 0 and replies(world.slack, alert) == []  # no escalation after the ack

    bot.press_button(alert, "ack_alert", user=ALICE)  # a second click is harmless
    wait_for(lambda: world.slack.responses)
    assert f"Already acknowledged by <@{BOB}>" in world.slack.responses[-1]["text"]
    assert len(world.slack.calls("chat.update")) == 1


def test_an_unacknowledged_alert_escalates_on_time_up_to_repeat_times(world, bot: Bot) -> None:
    alert = world.alert(bot)
    bot.clock.advance(minutes=29)
    assert bot.app.tick() == 0
    bot.clock.advance(minutes=2)
    assert bot.app.tick() == 1
    bot.clock.advance(minutes=30)
    assert bot.app.tick() == 1
    bot.clock.advance(hours=5)
    assert bot.app.tick() == 0  # repeat: 2
    first, second = replies(world.slack, alert)
    assert first["text"].startswith(f"<!subteam^{LEADS_GROUP}> ⏰ Not acknowledged after 31m:")
    assert first["text"].endswith("(escalation 1 of 2)") and second["text"].endswith("(escalation 2 of 2)")


def test_escalation_timers_survive_a_restart_and_overdue_ones_fire_once(world) -> None:
    for bot in world.start():
        alert = world.alert(bot)
    world.clock.advance(hours=2)  # the bot was down through both escalation times
    for bot in world.start():
        assert bot.app.tick() == 1
        assert bot.app.tick() == 0
    [reply] = replies(world.slack, alert)
    assert reply["text"].endswith("(escalation 2 of 2)")


def test_feeds_oncall_lists_open_alerts_with_age_and_step(world, bot: Bot) -> None:
    world.alert(bot)
    bot.clock.advance(minutes=40)
    bot.app.tick()
    reply = bot.say("oncall", channel=POLICY)
    assert "*Open alerts in <#C0POLICY1>* (1, oldest first)" in reply
    assert "🚨 <https://www.scmp.com/tech/entity-list|US adds chip firms to entity list>" in reply
    assert "open 40m · escalated 1 of 2, next to @policy-leads in 20m" in reply


def test_feeds_list_shows_each_entrys_paging_options(world, bot: Bot) -> None:
    reply = bot.say("list", channel=POLICY)
    assert (
        "🚨 high priority · pages @policy-oncall · acknowledge button · "
        "escalates to @policy-leads after 30m (up to 2×)"
    ) in reply


def test_an_unknown_user_group_stops_the_start_with_its_rules_line(world) -> None:
    write_rules(world.tmp_path, world.feed_url, mention="@no-such-team")
    with pytest.raises(ConfigError) as raised:
        next(world.start())
    assert raised.value.problems == (
        f"{world.rules}:7: mention: no user group '@no-such-team' in this Slack workspace (usergroups.list)",
    )


def test_when_slack_cannot_be_asked_at_start_the_bot_starts_and_says_so(world, caplog) -> None:
    world.slack.fail_next("usergroups.list", times=4, status=503, body="<html>down</html>")  # past retries
    for bot in world.start():
        assert bot.app.rules.channels
    assert any("cannot check on-call mentions now" in r.message for r in caplog.records)


# -- the pure core ------------------------------------------------------------------------------------

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
ITEM = Item(feed_id="f", key="k", link="https://e.com/k", title="Entity list grows")


def rule(**oncall) -> ChannelRule:
    return ChannelRule("C1", ("x",), oncall=OnCall(**oncall))


def test_the_policy_merges_every_rule_that_matched() -> None:
    leads = Escalation(1800, "@leads", 2)
    match = ChannelMatch(
        "C1",
        ITEM,
        ("x",),
        (
            rule(mention="@a", priority="low"),
            rule(mention="@b", priority="high", ack=True, escalate=leads),
            rule(mention="@a", escalate=Escalation(60, "@x")),
        ),
    )
    assert policy_of(match) == AlertPolicy(priority="high", mentions=("@a", "@b"), ack=True, escalate=leads)
    assert policy_of(ChannelMatch("C1", ITEM, ("x",))) == AlertPolicy()


def open_alert(**changes) -> OpenAlert:
    policy = AlertPolicy(priority="high", ack=True, escalate=Escalation(1800, "@leads", 3))
    return replace(OpenAlert("a", "C1", "1.0", ITEM, ("x",), "src", policy, T0), **changes)


@pytest.mark.parametrize(
    ("minutes", "sent", "expected_step"),
    [(29, 0, None), (30, 0, 1), (59, 1, None), (61, 1, 2), (200, 0, 3), (200, 3, None)],
)
def test_due_escalations(minutes: int, sent: int, expected_step: int | None) -> None:
    due = due_escalations([open_alert(escalations_sent=sent)], T0 + timedelta(minutes=minutes))
    assert [d.step for d in due] == ([expected_step] if expected_step else [])


def test_an_acknowledged_alert_never_escalates() -> None:
    acked = open_alert(acked_by="U1", acked_at=T0)
    assert due_escalations([acked], T0 + timedelta(days=1)) == []


# -- grouped messages: floods, quiet hours, digests ---------------------------------------------------


def stories(count: int, words: str = "export controls") -> list[bytes]:
    return [
        rss_item(
            f"Story {n} on {words}",
            f"https://www.scmp.com/tech/story-{n}",
            published="Mon, 01 Jun 2026 08:30:00 +0000",
        )
        for n in range(count)
    ]


def grouped(slack: SlackStandIn, channel: str) -> list[dict]:
    return [
        p for p in slack.posts_to(channel) if p.get("metadata", {}).get("event_type") == "feed_alert_group"
    ]


def test_a_burst_posts_the_first_alerts_and_groups_the_rest_in_one_message(world) -> None:
    world.use_rules(
        f'  - channel: {POLICY}\n    keywords: ["export control*"]\n', "  max_alerts_per_cycle: 2\n"
    )
    for bot in world.start():
        bot.poll()
        bot.publish(*stories(5))
        bot.poll()
        assert len(world.slack.posts_to(POLICY)) == 2  # the first two, one by one
        assert bot.app.tick() == 1
        [group] = grouped(world.slack, POLICY)
        assert group["text"] == "3 items more from this poll (grouped, so the channel is not flooded)"
        items = group["metadata"]["event_payload"]["items"]
        assert [entry["item_key"] for entry in items] == [
            f"https://www.scmp.com/tech/story-{n}"
            for n in (0, 1, 2)  # same time: by key
        ]
        assert all(isinstance(entry, dict) for entry in items)
        bot.poll()
        assert bot.app.tick() == 0 and len(world.slack.posts_to(POLICY)) == 3  # each item delivered once


def test_high_priority_alerts_are_never_folded_into_a_group(world) -> None:
    world.use_rules(
        f'  - channel: {POLICY}\n    keywords: ["export control*"]\n    priority: high\n',
        "  max_alerts_per_cycle: 2\n",
    )
    for bot in world.start():
        bot.poll()
        bot.publish(*stories(4))
        bot.poll()
        bot.app.tick()
    assert len(world.slack.posts_to(POLICY)) == 4 and grouped(world.slack, POLICY) == []


QUIET = '    quiet_hours: {from: "22:00", to: "07:00", tz: Europe/London}\n'


def test_quiet_hours_hold_normal_alerts_and_release_them_together_at_the_end(world) -> None:
    world.use_rules(
        f'  - channel: {POLICY}\n    keywords: ["export control*"]\n{QUIET}'
        f'  - channel: {POLICY}\n    keywords: ["entity list"]\n    priority: high\n{QUIET}'
    )
    world.clock.advance(hours=13)  # 22:00 UTC = 23:00 in London (summer time)
    for bot in world.start():
        bot.poll()
        bot.publish(*stories(2), rss_item("Entity list grows", "https://www.scmp.com/tech/el"))
        bot.poll()
        assert [p["text"] for p in world.slack.posts_to(POLICY)] == [
            "🚨 High priority: Entity list grows https://www.scmp.com/tech/el"  # high goes out at once
        ]
        world.clock.advance(hours=7, minutes=59)  # 06:59 in London
        assert bot.app.tick() == 0
    world.clock.advance(minutes=1)  # 07:00 in London; a restart in between loses nothing
    for bot in world.start():
        assert bot.app.tick() == 1
    [released] = grouped(world.slack, POLICY)
    assert released["text"] == "While quiet hours were on: 2 items"
    assert "Story 0 on export controls" in reply_text(released) and "Story 1" in reply_text(released)


def test_a_digest_lists_every_match_since_the_last_one_grouped_by_keyword(world) -> None:
    digest = '    digest: {at: "09:00", tz: Europe/Amsterdam}\n'
    world.use_rules(f'  - channel: {POLICY}\n    keywords: ["export control*", "entity list"]\n{digest}')
    for bot in world.start():  # 09:00 UTC = 11:00 in Amsterdam: the next digest is tomorrow 07:00 UTC
        bot.poll()
        bot.publish(*stories(2), rss_item("Entity list grows", "https://www.scmp.com/tech/el"))
        bot.poll()
        assert world.slack.posts_to(POLICY) == [] and bot.app.tick() == 0
        world.clock.advance(hours=21, minutes=59)
        assert bot.app.tick() == 0
        world.clock.advance(minutes=1)
        assert bot.app.tick() == 1
        [digest_post] = grouped(world.slack, POLICY)
        assert digest_post["text"] == "Digest: 3 items since the last one"
        text = reply_text(digest_post)
        sections = {block.split("\n")[0]: block for block in text.split("\n*`")[1:]}
        assert set(sections) == {"export control*`* (2)", "entity list`* (1)"}
        assert (
            "Story 0" in sections["export control*`* (2)"] and "Story 1" in sections["export control*`* (2)"]
        )
        assert "Entity list grows" in sections["entity list`* (1)"]
        # /metrics counts each item of the digest, its latency the day it waited for the digest
        sample = bot.app.metrics.registry.get_sample_value
        assert sample("feedwatch_alerts_posted_total") == 3
        assert sample("feedwatch_alert_latency_seconds_sum") == 3 * (22 * 3600)
        world.clock.advance(days=1)
        bot.poll()
        assert bot.app.tick() == 0  # nothing new: no empty digest


def test_a_page_goes_out_even_in_a_paused_channel(world, bot: Bot) -> None:
    bot.say("pause 2h", channel=POLICY)
    world.alert(bot)  # the high-priority on-call entry
    assert len(world.slack.posts_to(POLICY)) == 1


def test_a_grouped_message_whose_answer_was_lost_is_found_not_regrouped(world) -> None:
    world.use_rules(
        f'  - channel: {POLICY}\n    keywords: ["export control*"]\n', "  max_alerts_per_cycle: 1\n"
    )
    for bot in world.start():
        bot.poll()
        bot.publish(*stories(3))
        bot.poll()  # one posted, two queued
        world.slack.fail_next("chat.postMessage", status=500, error="internal_error", after_posting=True)
        assert bot.app.tick() == 0  # Slack took the group but answered 500
        bot.publish(*stories(4))
        bot.poll()  # story 3 arrives: posted alone (a new poll)
        world.clock.advance(minutes=1)
        bot.app.tick()
    keys = [p["metadata"]["event_payload"].get("item_key") for p in world.slack.posts_to(POLICY)]
    listed = [
        e["item_key"] for g in grouped(world.slack, POLICY) for e in g["metadata"]["event_payload"]["items"]
    ]
    delivered = [k for k in keys if k] + listed
    assert sorted(delivered) == sorted(f"https://www.scmp.com/tech/story-{n}" for n in range(4))  # once each


def test_a_burst_does_not_release_a_digest_early(world) -> None:
    digest = '    digest: {at: "09:00", tz: Europe/Amsterdam}\n'
    world.use_rules(
        f'  - channel: {POLICY}\n    keywords: ["entity list"]\n{digest}'
        f'  - channel: {POLICY}\n    keywords: ["export control*"]\n',
        "  max_alerts_per_cycle: 1\n",
    )
    for bot in world.start():
        bot.poll()
        bot.publish(*stories(3), rss_item("Entity list grows", "https://www.scmp.com/tech/el"))
        bot.poll()
        bot.app.tick()
        [flood] = grouped(world.slack, POLICY)
        assert "Entity list grows" not in reply_text(flood)
        world.clock.advance(hours=22)
        bot.app.tick()
        assert "Entity list grows" in reply_text(grouped(world.slack, POLICY)[-1])


def test_an_escalation_whose_answer_was_lost_is_not_sent_twice(world, bot: Bot) -> None:
    alert = world.alert(bot)
    bot.clock.advance(minutes=31)
    world.slack.fail_next("chat.postMessage", status=500, error="internal_error", after_posting=True)
    assert bot.app.tick() == 0
    bot.clock.advance(minutes=5)
    bot.app.tick()  # finds its reply in the thread
    assert len(replies(world.slack, alert)) == 1
    bot.clock.advance(minutes=30)
    assert bot.app.tick() == 1 and len(replies(world.slack, alert)) == 2


def test_a_missing_usergroups_scope_stops_the_start_saying_what_to_do(world) -> None:
    world.slack.fail_next("usergroups.list", error="missing_scope")
    with pytest.raises(BotError, match="needs the usergroups:read scope"):
        next(world.start())


def test_the_next_digest_time_is_right_across_a_clock_change() -> None:
    # 2026-10-25 in Amsterdam: 03:00 summer time becomes 02:00 winter time; 02:45 happens twice.
    first_0245 = datetime(2026, 10, 25, 0, 45, tzinfo=UTC)
    before, between = datetime(2026, 10, 25, 0, 10, tzinfo=UTC), datetime(2026, 10, 25, 1, 10, tzinfo=UTC)
    assert next_daily(time(2, 45), "Europe/Amsterdam", before) == first_0245
    # Once a day: after the first 02:45, the next is tomorrow's, not the repeated one an hour later.
    assert next_daily(time(2, 45), "Europe/Amsterdam", between) == datetime(2026, 10, 26, 1, 45, tzinfo=UTC)
    assert next_daily(time(9, 0), "Europe/Amsterdam", between) == datetime(2026, 10, 25, 8, 0, tzinfo=UTC)
    # Spring: 02:30 does not exist on 29 March; it comes when the clock has sprung past it, once.
    spring = next_daily(time(2, 30), "Europe/Amsterdam", datetime(2026, 3, 29, 0, 0, tzinfo=UTC))
    assert spring == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert next_daily(time(2, 30), "Europe/Amsterdam", spring) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("link_length", [277, 483])
def test_a_large_release_is_split_and_never_holds_up_a_page(world, link_length: int) -> None:
    quiet = '    quiet_hours: {from: "22:00", to: "07:00", tz: Europe/London}\n'
    world.use_rules(
        f'  - channel: {POLICY}\n    keywords: ["export control*"]\n{quiet}'
        f'  - channel: {POLICY}\n    keywords: ["entity list"]\n    priority: high\n'
        '    escalate: {after: 30m, to: "@policy-leads", repeat: 2}\n'
    )
    world.clock.advance(hours=13)  # 23:00 in London
    long_stories = [
        rss_item(
            f"Story {n:03d} on export controls " + "y" * 150,
            f"https://www.scmp.com/tech/{'x' * link_length}-{n:03d}",
            published="Mon, 01 Jun 2026 08:30:00 +0000",
        )
        for n in range(50)  # over one message's 40, within what one poll may send a channel (55)
    ]
    for bot in world.start():
        bot.poll()
        bot.publish(*long_stories, EXPORT_NEWS)
        bot.poll()
        [page] = world.slack.posts_to(POLICY)  # the high-priority one, at once
        world.clock.advance(hours=8)  # quiet hours are over; the page is overdue
        bot.app.tick()
        assert bot.app.store.queued() == []
    groups = grouped(world.slack, POLICY)
    assert len(groups) > 1  # split, as Slack's limits require
    for message in groups:
        assert block_problem(message["blocks"]) is None
    listed = [e["item_key"] for g in groups for e in g["metadata"]["event_payload"]["items"]]
    assert len(listed) == len(set(listed)) == 50
    assert len(replies(world.slack, page)) == 1


def test_a_post_that_may_have_landed_before_quiet_hours_is_looked_up_not_regrouped(world) -> None:
    quiet = '    quiet_hours: {from: "22:00", to: "07:00", tz: Europe/London}\n'
    world.use_rules(f'  - channel: {POLICY}\n    keywords: ["export control*"]\n{quiet}')
    world.clock.advance(hours=11, minutes=59)  # 21:59 in London
    for bot in world.start():
        bot.poll()
        world.slack.fail_next("chat.postMessage", status=500, error="internal_error", after_posting=True)
        bot.publish(*stories(1))
        bot.poll()  # Slack posts it but answers 500
        world.clock.advance(minutes=2)  # quiet hours have begun
        bot.app.retry_pending()  # retried as itself: found in the channel
        world.clock.advance(hours=9)
        bot.app.tick()
    assert len(world.slack.posts_to(POLICY)) == 1 and grouped(world.slack, POLICY) == []
