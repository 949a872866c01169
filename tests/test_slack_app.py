"""The Slack app through its real HTTP endpoint: signed slash commands, button presses and events, as Slack
sends them, to POST /slack/events on a loopback port; Slack's Web API is the stand-in. Feeds change between
polls on a loopback feed host, and time is a test clock."""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from bot.app import App, build_app
from bot.config import environment_from, load_rules
from bot.fetch import GuardedFetcher
from bot.membership import ChannelDirectory
from bot.model import AddedFeed
from bot.slackapp import WORKING, Serving, serve
from tests.conftest import Clock, rss_item, scmp_feed
from tests.fake_network import FakeInternet, FakeResolver
from tests.feed_host import FeedHost, running_feed_host
from tests.slack_standin import SlackStandIn, visible_text

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHIPS, CHINA, OTHER = "C0CHIPS01", "C0CHINA01", "C0OTHER01"
ALICE, BOB, ADMIN = "U0ALICE01", "U0BOB0001", "U0ADMIN01"


def sign(body: bytes, *, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    base = f"v0:{timestamp}:".encode() + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}


class Bot:
    def __init__(self, app: App, serving: Serving, slack: SlackStandIn, feed_host: FeedHost, clock: Clock):
        self.app, self.serving, self.slack, self.feed_host, self.clock = app, serving, slack, feed_host, clock
        self.url = f"http://127.0.0.1:{serving.http.port}"
        assert serving.detail is not None
        self.detail_url = f"http://127.0.0.1:{serving.detail.port}"  # the full /healthz and /metrics
        self.http = httpx.Client(timeout=30)  # a bound on a stall, never a measure: generous
        self._answers = itertools.count(1)

    def post(self, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> httpx.Response:
        headers = sign(body) if headers is None else headers
        return self.http.post(
            self.url + "/slack/events", content=body, headers={"Content-Type": content_type, **headers}
        )

    def command(
        self,
        text: str,
        *,
        channel: str = CHIPS,
        user: str = ALICE,
        headers=None,
        name: str = "/feeds",
        response_url: str | None = None,
    ) -> httpx.Response:
        form = {
            "command": name,
            "text": text,
            "channel_id": channel,
            "channel_name": "directmessage" if channel.startswith("D") else "chips",
            "user_id": user,
            "team_id": "T0TEAM001",
            "response_url": self.slack.response_url(response_url or f"r{next(self._answers)}"),
            "trigger_id": "1.2.3",
        }
        body = urlencode(form).encode()
        return self.post(body, "application/x-www-form-urlencoded", headers)

    def answer(self, text: str, **where) -> dict:
        """The reply's payload: the acknowledgement, or for slow work, what follows "Working on it…"
        through the command's response_url."""
        name = f"r{next(self._answers)}"
        response = self.command(text, response_url=name, **where)
        assert response.status_code == 200, response.text
        if response.json().get("text") != WORKING:
            return response.json()
        wait_for(lambda: self.slack.calls(f"response/{name}"), timeout=30)
        [late] = self.slack.calls(f"response/{name}")
        return late

    def say(self, text: str, **where) -> str:
        """The reply's text, blocks included (what the user reads)."""
        return reply_text(self.answer(text, **where))

    def press(self, message: dict, *, user: str = ALICE) -> httpx.Response:
        return self.press_button(message, "mute_topic", user=user)

    def press_button(self, message: dict, action_id: str, *, user: str = ALICE) -> httpx.Response:
        [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
        [button] = [e for e in actions["elements"] if e["action_id"] == action_id]
        payload = {
            "type": "block_actions",
            "user": {"id": user},
            "team": {"id": "T0TEAM001"},
            "channel": {"id": message["channel"]},
            "container": {"type": "message", "channel_id": message["channel"], "message_ts": message["ts"]},
            "message": {"ts": message["ts"], "blocks": message["blocks"]},
            "response_url": self.slack.response_url("button"),
            "trigger_id": "1.2.4",
            "actions": [
                {
                    "type": "button",
                    "action_id": button["action_id"],
                    "value": button["value"],
                    "block_id": "b",
                }
            ],
        }
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return self.post(body, "application/x-www-form-urlencoded")

    def event(self, event: dict) -> httpx.Response:
        envelope = {"type": "event_callback", "team_id": "T0TEAM001", "event_id": "Ev1", "event": event}
        return self.post(json.dumps(envelope).encode(), "application/json")

    def poll(self) -> None:
        self.app.poll_all_once()
        self.app.retry_pending()

    def publish(self, *extra: bytes) -> None:
        self.feed_host.serve("/feed", scmp_feed(drop_newest=3, extra_items=extra))


def wait_for(condition, timeout: float = 30) -> None:
    """Work Slack triggers (events, late answers) runs after the HTTP answer, on the bot's own threads."""
    done = threading.Event()
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        done.wait(0.01)
    assert condition(), "timed out"


def reply_text(body: dict) -> str:
    """What the user reads: the blocks' text (the fallback text when there are no blocks)."""
    if not body.get("blocks"):
        return body.get("text", "")
    return visible_text(body["blocks"])


DEFAULT_CHANNELS = f"  - channel: {CHIPS}\n    keywords: [Nexperia]\n    exclude: [Opinion]\n"


def write_rules(folder: Path, feed_url: str, settings: str = "", channels: str = DEFAULT_CHANNELS) -> Path:
    path = folder / "rules.yaml"
    path.write_text(
        f"settings:\n  backfill: 0\n{settings}"
        f"feeds:\n  - id: scmp\n    url: {feed_url}\n"
        f"channels:\n{channels}"
    )
    return path


@pytest.fixture
def bot(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> Iterator[Bot]:
    yield from start_bot(tmp_path, feed_host, slack, clock)


def start_bot(
    tmp_path,
    feed_host,
    slack,
    clock,
    settings: str = "",
    guarded_fetcher=None,
    channels: str = DEFAULT_CHANNELS,
    **environ_extra: str,
) -> Iterator[Bot]:
    for channel, name in ((CHIPS, "chips"), (CHINA, "china"), (OTHER, "other")):
        slack.add_channel(channel, name)
    feed_url = feed_host.serve("/feed", scmp_feed(drop_newest=3))
    rules = write_rules(tmp_path, feed_url, settings, channels)
    environ = {
        "SLACK_BOT_TOKEN": slack.state.token,
        "SLACK_API_URL": slack.url,
        "SLACK_SIGNING_SECRET": SECRET,
        "BOT_RULES": str(rules),
        "BOT_DB": str(tmp_path / "state.json"),
        "PORT": "0",
        "METRICS_PORT": "0",
        **environ_extra,
    }
    env = environment_from(environ, tmp_path)
    app = build_app(env, sleep=clock.sleep, now=clock, listening=True, guarded_fetcher=guarded_fetcher)
    serving = serve(app, env, on_resume=app.retry_pending, host="127.0.0.1")
    try:
        bot = Bot(app, serving, slack, feed_host, clock)
        bot.poll()  # the first poll: the archive fills, nothing is posted (backfill 0)
        yield bot
    finally:
        serving.stop()
        app.close()


HUAWEI_NEWS = rss_item(
    "Huawei unveils a new AI chip",
    "https://www.scmp.com/tech/huawei-ai-chip",
    published="Mon, 01 Jun 2026 08:30:00 +0000",
)
HUAWEI_MORE = rss_item(
    "Huawei ships the chip",
    "https://www.scmp.com/tech/huawei-ships",
    published="Mon, 01 Jun 2026 08:40:00 +0000",
)


# -- requests Slack did not sign ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="unsigned"),
        pytest.param(sign(b"something else"), id="forged"),
        pytest.param(sign(b"", secret="not-the-secret"), id="wrong-secret"),
        pytest.param("stale", id="older-than-five-minutes"),
    ],
)
def test_a_request_without_a_valid_signature_is_refused_and_changes_nothing(bot: Bot, headers) -> None:
    form = urlencode({"command": "/feeds", "text": "subscribe Huawei", "channel_id": CHIPS, "user_id": ALICE})
    body = form.encode()
    if headers == "stale":
        headers = sign(body, timestamp=int(time.time()) - 6 * 60)
    response = bot.command("subscribe Huawei", headers=headers)
    assert response.status_code == 401
    assert bot.app.store.subscriptions() == []


def test_tokens_and_the_signing_secret_never_reach_logs_or_replies(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    replies = [
        bot.say(text)
        for text in ("help", "subscribe query:(Huawei", "nonsense", "search", "export", "list", "test x")
    ]
    replies.append(bot.command("list", headers=sign(b"forged")).text)
    bot.slack.fail_next("chat.postMessage", error="invalid_auth")
    bot.say("subscribe Huawei", channel=CHINA)
    bot.publish(HUAWEI_NEWS)
    bot.poll()
    replies.append(bot.http.get(bot.url + "/healthz").text)
    replies.append(bot.http.get(bot.detail_url + "/healthz").text)
    replies.append(bot.http.get(bot.detail_url + "/metrics").text)
    for secret in (SECRET, bot.slack.state.token):
        assert secret not in caplog.text
        assert not [reply for reply in replies if secret in reply]


def test_healthz_needs_no_signature_and_the_detail_listener_shows_each_feed(bot: Bot) -> None:
    response = bot.http.get(bot.detail_url + "/healthz")
    assert response.status_code == 200
    status = response.json()
    assert status["status"] == "ok"
    assert status["feeds"]["scmp"]["items_seen"] == 47
    assert status["feeds"]["scmp"]["last_error"] is None


def test_the_public_port_tells_only_ok_or_failing_and_the_detail_listens_on_loopback(bot: Bot) -> None:
    """Anyone can reach PORT: it must not tell feed errors, internal paths or channel IDs."""
    assert bot.serving.detail is not None and bot.serving.detail.host == "127.0.0.1"
    assert bot.http.get(bot.url + "/healthz").json() == {"status": "ok"}
    bot.feed_host.serve("/feed", b"<html>/srv/internal/feeds.xml is gone</html>", "text/html")
    bot.clock.advance(minutes=10)
    bot.poll()  # the only feed fails: the bot is failing
    detail = bot.http.get(bot.detail_url + "/healthz")
    assert detail.status_code == 503 and detail.json()["feeds"]["scmp"]["last_error"] == "not a feed"

    public = bot.http.get(bot.url + "/healthz")
    assert (public.status_code, public.json()) == (503, {"status": "failing"})
    assert bot.http.get(bot.url + "/metrics").status_code == 404
    assert bot.http.get(bot.detail_url + "/metrics").text.startswith("# HELP")


# -- subscribe, and the alerts that follow -------------------------------------------------------------


def test_subscribe_previews_recent_items_and_the_next_new_item_is_posted(bot: Bot) -> None:
    reply = bot.say('subscribe Huawei "scaling law"', channel=CHINA)
    assert "now gets alerts for `Huawei`, `scaling law` (every feed)" in reply
    assert "All topics here: `Huawei`, `scaling law`." in reply
    assert "Peking University unveils 3D design tool to power Huawei’s chip ambitions" in reply  # the archive
    assert reply.count("• <https://") == 3  # three recent items, as a taste
    assert bot.slack.posts_to(CHINA) == []  # old items are never posted

    bot.publish(HUAWEI_NEWS)
    bot.poll()  # no restart: the subscription is in force at the next poll
    [post] = bot.slack.posts_to(CHINA)
    assert post["text"].startswith("Huawei unveils a new AI chip")
    assert [b["type"] for b in post["blocks"]][-1] == "actions"  # the mute button

    assert "Removed: `Huawei`" in bot.say("unsubscribe huawei", channel=CHINA)
    bot.publish(HUAWEI_NEWS, HUAWEI_MORE)
    bot.poll()
    assert len(bot.slack.posts_to(CHINA)) == 1  # nothing more after unsubscribe


def test_subscriptions_survive_a_restart(bot: Bot, tmp_path: Path) -> None:
    bot.say("subscribe Huawei feed:scmp", channel=CHINA)
    bot.app.close()
    env = environment_from(
        {
            "SLACK_BOT_TOKEN": bot.slack.state.token,
            "SLACK_API_URL": bot.slack.url,
            "BOT_RULES": str(tmp_path / "rules.yaml"),
            "BOT_DB": str(tmp_path / "state.json"),
        },
        tmp_path,
    )
    again = build_app(env, sleep=bot.clock.sleep, now=bot.clock)
    try:
        assert [(r.channel, r.keywords, r.feeds) for r in again.rules.channels][1:] == [
            (CHINA, ("Huawei",), ("scmp",))
        ]
    finally:
        again.close()


def test_subscribe_rejects_an_unknown_feed_and_a_bad_term(bot: Bot) -> None:
    assert "There is no feed `nope`. Feeds: `scmp`." in bot.say("subscribe Huawei feed:nope")
    assert "'*' is only allowed at the end of a word" in bot.say("subscribe ch*ip")
    assert "Subscribe to what?" in bot.say("subscribe")
    assert bot.app.store.subscriptions() == []


def test_subscribing_in_a_private_channel_the_bot_is_not_in_says_how_to_invite_it(bot: Bot) -> None:
    bot.slack.add_channel("G0SECRET1", "secret", private=True)
    reply = bot.say("subscribe Huawei", channel="G0SECRET1")
    assert "I am not in this private channel yet: `/invite @feedwatch`" in reply


# -- reading: list, search, latest, test, export ---------------------------------------------------------


def test_list_marks_each_subscription_with_its_origin(bot: Bot) -> None:
    bot.say("subscribe Huawei", channel=CHIPS, user=BOB)
    reply = bot.say("list", channel=CHIPS)
    assert "`Nexperia` · every feed · rules.yaml line 7 · except `Opinion` _(managed in rules.yaml)_" in reply
    assert f"`Huawei` · every feed · added by <@{BOB}> <!date^" in reply


def test_search_lists_the_newest_matches_within_the_days_asked(bot: Bot) -> None:
    reply = bot.say("search nexperia days:30")
    assert reply.startswith("Newest items matching nexperia (in the last 30 days):")
    lines = [line for line in reply.splitlines() if line.startswith("• ")]
    assert 1 <= len(lines) <= 10
    assert "Wingtech sues Dutch unit Nexperia" in lines[0]  # most recent first
    assert "scmp · <!date^" in reply

    assert bot.say("search nexperia days:1") == "Nothing found for nexperia in the last day."
    assert "`days:` needs a number of days" in bot.say("search nexperia days:soon")


def test_search_shows_at_most_ten(bot: Bot) -> None:
    reply = bot.say("search chip*")
    assert len([line for line in reply.splitlines() if line.startswith("• ")]) == 10


def test_latest_shows_the_newest_items_matching_this_channels_subscriptions(bot: Bot) -> None:
    reply = bot.say("latest 2")
    items = [line for line in reply.splitlines() if line.startswith("• ")]
    assert len(items) == 2 and all("Nexperia" in line or "Wingtech" in line for line in items)
    assert "no subscriptions yet" in bot.say("latest", channel=OTHER)


def test_test_explains_which_terms_match_and_which_exclude(bot: Bot) -> None:
    bot.say('subscribe "export control*"')
    reply = bot.say("test Nexperia faces new export controls")
    assert "*This would alert here.*" in reply
    assert "✅ `Nexperia` matches (the whole word, any case; rules.yaml line 7)" in reply
    assert "✅ `export control*` matches" in reply
    assert "> *Nexperia* faces new *export controls*" in reply

    blocked = bot.say("test Opinion: Nexperia is overrated")
    assert "*No alert:* an exclude term wins." in blocked and "🚫 `Opinion` excludes it" in blocked


def test_export_gives_a_rules_yaml_snippet_that_loads(bot: Bot, tmp_path: Path) -> None:
    bot.say('subscribe Huawei "scaling law"', channel=CHINA)
    bot.say("subscribe SMIC feed:scmp", channel=CHINA)
    reply = bot.say("export", channel=CHINA)
    snippet = reply.split("```")[1]
    entries = yaml.safe_load(snippet)["channels"]
    assert entries == [
        {"channel": CHINA, "keywords": ["Huawei", "scaling law"]},
        {"channel": CHINA, "feeds": ["scmp"], "keywords": ["SMIC"]},
    ]
    combined = tmp_path / "combined.yaml"
    combined.write_text("feeds:\n  - id: scmp\n    url: https://example.com/feed\n" + snippet)
    assert len(load_rules(combined).channels) == 2  # ready to be committed


def test_help_and_unknown_subcommands_show_the_usage(bot: Bot) -> None:
    assert "`/feeds subscribe Huawei" in bot.say("help")
    unknown = bot.say("subscirbe Huawei")
    assert unknown.startswith("I don't know `subscirbe`.") and "`/feeds search nexperia" in unknown


# -- pause and resume -----------------------------------------------------------------------------------


def test_alerts_held_by_a_pause_are_delivered_on_resume(bot: Bot) -> None:
    bot.say("subscribe Huawei", channel=CHINA)
    assert "held until" in bot.say("pause 2h", channel=CHINA)
    bot.publish(HUAWEI_NEWS)
    bot.poll()
    assert bot.slack.posts_to(CHINA) == []
    assert "⏸ Paused until" in bot.say("list", channel=CHINA)
    bot.clock.advance(minutes=30)
    bot.app.retry_pending()
    assert bot.slack.posts_to(CHINA) == []  # still paused

    assert "1 held alert on the way" in bot.say("resume", channel=CHINA)
    [post] = bot.slack.posts_to(CHINA)
    assert post["text"].startswith("Huawei unveils a new AI chip")
    assert post["blocks"][-1]["type"] == "actions"  # held, and still with its mute button


def test_shortening_a_pause_releases_the_held_alerts_at_the_new_end(bot: Bot) -> None:
    bot.say("subscribe Huawei", channel=CHINA)
    bot.say("pause 10d", channel=CHINA)
    bot.publish(HUAWEI_NEWS)
    bot.poll()
    bot.say("pause 1h", channel=CHINA)
    bot.clock.advance(hours=2)
    bot.app.retry_pending()
    assert len(bot.slack.posts_to(CHINA)) == 1


def test_a_held_alert_whose_topic_was_unsubscribed_is_dropped_not_posted(bot: Bot, caplog) -> None:
    bot.say("subscribe Huawei", channel=CHINA)
    bot.say("pause 1h", channel=CHINA)
    bot.publish(HUAWEI_NEWS)
    bot.poll()
    bot.say("unsubscribe Huawei", channel=CHINA)
    bot.say("resume", channel=CHINA)
    assert bot.slack.posts_to(CHINA) == [] and bot.app.store.pending() == []
    assert any("pending alert dropped channel=C0CHINA01" in r.message for r in caplog.records)


def test_held_alerts_are_delivered_when_the_pause_ends(bot: Bot) -> None:
    bot.say("subscribe Huawei", channel=CHINA)
    bot.say("pause 1h", channel=CHINA)
    bot.publish(HUAWEI_NEWS)
    bot.poll()
    bot.clock.advance(minutes=61)
    bot.app.retry_pending()
    assert len(bot.slack.posts_to(CHINA)) == 1
    assert "was not paused" in bot.say("resume", channel=CHINA)


# -- admins -------------------------------------------------------------------------------------------


@pytest.fixture
def bot_with_admins(tmp_path, feed_host, slack, clock) -> Iterator[Bot]:
    yield from start_bot(tmp_path, feed_host, slack, clock, settings=f"  admins: [{ADMIN}]\n")


def test_only_admins_change_a_channels_subscriptions(bot_with_admins: Bot) -> None:
    bot = bot_with_admins
    for text in ("subscribe Huawei", "unsubscribe Nexperia", "pause 1h", "resume"):
        assert f"Only admins can change this channel's alerts: <@{ADMIN}>" in bot.say(text, user=BOB)
    assert bot.app.store.subscriptions() == []
    assert "Nexperia" in bot.say("search nexperia", user=BOB)  # reading is for everyone
    assert "now gets alerts" in bot.say("subscribe Huawei", user=ADMIN)


def test_rules_yaml_terms_cannot_be_removed_from_slack(bot: Bot) -> None:
    reply = bot.say("unsubscribe Nexperia")
    assert "Managed in rules.yaml, so not removable from Slack: `Nexperia` (line 7)." in reply
    assert [r.keywords for r in bot.app.rules.channels] == [("Nexperia",)]


# -- the mute button ------------------------------------------------------------------------------------


def test_the_mute_button_removes_the_slack_added_terms_that_matched(bot: Bot) -> None:
    bot.say("subscribe Huawei chip*", channel=CHINA)
    bot.publish(HUAWEI_NEWS)
    bot.poll()
    [alert] = bot.slack.posts_to(CHINA)
    assert bot.press(alert).status_code == 200
    wait_for(lambda: bot.slack.responses)
    [answer] = bot.slack.responses
    assert "Muted `Huawei`, `chip*` here" in reply_text(answer)
    assert answer["response_type"] == "ephemeral" and answer["replace_original"] in (False, "false")
    assert bot.app.store.subscriptions(CHINA) == []

    bot.publish(HUAWEI_NEWS, HUAWEI_MORE)
    bot.poll()
    assert len(bot.slack.posts_to(CHINA)) == 1


def test_an_alert_matched_only_by_rules_yaml_has_no_mute_button(bot: Bot) -> None:
    bot.publish(rss_item("Nexperia wins", "https://www.scmp.com/n1"))
    bot.poll()
    [alert] = bot.slack.posts_to(CHIPS)
    assert [b["type"] for b in alert["blocks"]] == ["rich_text", "context"]


# -- personal watch in a DM -----------------------------------------------------------------------------


def test_in_a_direct_message_the_commands_manage_a_personal_watch(bot: Bot) -> None:
    reply = bot.say("subscribe Huawei", channel="D0SOMEDM1", user=ALICE)
    assert "Your personal watch now gets alerts for `Huawei`" in reply
    dm = bot.slack.state.dms[ALICE]
    bot.publish(HUAWEI_NEWS)
    bot.poll()
    assert [p["text"].split(" https")[0] for p in bot.slack.posts_to(dm)] == ["Huawei unveils a new AI chip"]
    assert "Your personal watch" in bot.say("list", channel="D0SOMEDM1")


# -- App Home -------------------------------------------------------------------------------------------


def test_app_home_shows_feed_health_my_channels_and_the_latest_alerts(bot: Bot) -> None:
    bot.say("subscribe Huawei", channel=CHINA)
    bot.say("subscribe Huawei", channel=OTHER, user=BOB)  # Bob's channel: Alice is not in it
    bot.publish(HUAWEI_NEWS)
    bot.poll()
    bot.slack.state.members[ALICE] = {CHINA}
    response = bot.event({"type": "app_home_opened", "user": ALICE, "channel": "D0SOMEDM1", "tab": "home"})
    assert response.status_code == 200
    wait_for(lambda: bot.slack.state.views)
    [published] = bot.slack.state.views
    assert published["user_id"] == ALICE
    text = reply_text(published["view"])
    assert "*scmp* · 🟢 ok" in text and "48 items seen" in text  # 47, then Huawei news
    assert f"<#{CHINA}>: `Huawei`" in text
    assert f"<#{CHIPS}>" not in text.split("Latest alerts")[0]  # Alice is not in #chips
    latest = text.split("Latest alerts")[1]
    assert "Huawei unveils a new AI chip" in latest and f"<#{CHINA}>" in latest
    assert f"<#{OTHER}>" not in text  # never another channel's alerts
    assert "not receiving alerts" not in text


def test_app_home_names_a_channel_that_cannot_take_posts(bot: Bot) -> None:
    bot.say("subscribe Huawei", channel=CHINA)
    bot.slack.archive(CHINA)
    bot.publish(HUAWEI_NEWS)
    bot.poll()
    response = bot.event({"type": "app_home_opened", "user": ALICE, "channel": "D0SOMEDM1", "tab": "home"})
    assert response.status_code == 200
    wait_for(lambda: bot.slack.state.views)
    text = reply_text(bot.slack.state.views[0]["view"])
    assert "Channels not receiving alerts" in text
    assert f"⚠️ <#{CHINA}>: the channel is archived" in text


# -- slow answers and rules reloads -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        pytest.param("search nexperia", "Newest items matching nexperia", id="slow-work-pool"),
        pytest.param("list", "`Nexperia` · every feed", id="over-the-ack-budget"),
    ],
)
def test_a_slow_answer_is_acknowledged_at_once_and_sent_through_response_url(
    bot: Bot, text: str, answer: str
) -> None:
    interface = bot.serving.interface
    assert interface is not None
    gate = threading.Event()
    handle = interface.service.handle
    interface.budget = 0.05

    def slow(call):
        gate.wait(timeout=10)
        return handle(call)

    interface.service.handle = slow
    response = bot.command(text)
    assert response.json()["text"] == "Working on it…"  # answered while the work is still held
    gate.set()
    wait_for(lambda: bot.slack.responses)
    [late] = bot.slack.responses
    assert answer in reply_text(late)


@pytest.mark.parametrize("text", ["list", "search nexperia"])
def test_a_command_whose_handling_panics_is_answered_and_the_next_one_works(bot: Bot, text: str) -> None:
    """A PanicException from the Rust matchers is a BaseException: the handler boundary catches it too."""

    class PanicException(BaseException):
        pass

    interface = bot.serving.interface
    assert interface is not None
    handle = interface.service.handle

    def panicking(call):
        raise PanicException("called `Option::unwrap()` on a `None` value")

    interface.service.handle = panicking
    assert bot.say(text).startswith("Something went wrong on my side")
    interface.service.handle = handle
    assert "Nexperia" in bot.say("list")


def test_answers_that_overrun_the_ack_budget_hold_no_thread_so_other_commands_are_answered(bot: Bot) -> None:
    """Bolt runs listeners on five threads: six answers still being worked on must not hold them all."""
    interface = bot.serving.interface
    assert interface is not None
    gate = threading.Event()
    handle = interface.service.handle
    interface.budget = 0.05

    def slow_list(call):
        if call.text == "list":
            gate.wait(timeout=10)
        return handle(call)

    interface.service.handle = slow_list
    try:
        for _ in range(6):
            assert bot.command("list").json()["text"] == "Working on it…"
        started = time.monotonic()
        reply = bot.command("help", user=BOB)
        took = time.monotonic() - started
    finally:
        gate.set()
    assert "subscribe" in reply_text(reply.json()) and took < 1.0, took
    wait_for(lambda: len(bot.slack.responses) == 6)


def test_an_edited_rules_file_takes_effect_and_an_invalid_edit_keeps_the_last_good_rules(
    bot: Bot, tmp_path: Path, caplog
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules.read_text() + f"  - channel: {OTHER}\n    keywords: [Huawei]\n")
    assert bot.app.reload_rules_if_changed()
    bot.publish(HUAWEI_NEWS)
    bot.poll()
    assert len(bot.slack.posts_to(OTHER)) == 1

    rules.write_text(rules.read_text() + "  - channel: C0BROKEN1\n    keywords: []\n")
    assert not bot.app.reload_rules_if_changed()
    assert any(
        "rules reload failed" in r.message and "keywords: must not be empty" in r.message
        for r in caplog.records
    )
    assert {r.channel for r in bot.app.rules.channels} == {CHIPS, OTHER}


def test_slacks_url_verification_challenge_is_answered(bot: Bot) -> None:
    body = json.dumps(
        {
            "type": "url_verification",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "token": "x",
        }
    )
    response = bot.post(body.encode(), "application/json")
    assert response.status_code == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in response.text


def test_search_without_days_covers_every_item_seen_however_old_its_date(bot: Bot) -> None:
    old_story = "China warns of fresh chip crisis as Nexperia dispute flares up"  # published in March
    assert old_story not in bot.say("search nexperia days:30")
    reply = bot.say("search nexperia")
    assert reply.startswith("Newest items matching nexperia (among the items seen in the last 30 days):")
    assert old_story in reply


def test_the_command_can_have_another_name(tmp_path, feed_host, slack, clock) -> None:
    for bot in start_bot(tmp_path, feed_host, slack, clock, BOT_COMMAND="/news"):
        answer = bot.command("list", name="/news")
        assert answer.status_code == 200
        assert "Subscriptions of" in reply_text(answer.json())
        assert "`/news subscribe Huawei" in reply_text(bot.command("help", name="/news").json())
        assert bot.command("help", name="/feeds").status_code == 404  # not ours any more


def test_the_archive_forgets_items_after_the_retention(bot: Bot) -> None:
    assert "Nexperia" in bot.say("search nexperia")
    bot.clock.advance(days=29)
    assert bot.app.prune_archive() == 0
    bot.clock.advance(days=2)
    assert bot.app.prune_archive() == 47  # the scheduler runs this every hour
    assert bot.say("search nexperia").startswith("Nothing found for nexperia")


def test_mute_explains_the_rules_yaml_terms_that_keep_alerting(bot: Bot) -> None:
    bot.say("subscribe Wingtech", channel=CHIPS)  # #chips also watches Nexperia through rules.yaml
    bot.publish(rss_item("Wingtech and Nexperia settle", "https://www.scmp.com/tech/settle"))
    bot.poll()
    [alert] = bot.slack.posts_to(CHIPS)
    bot.press(alert)
    wait_for(lambda: bot.slack.responses)
    answer = reply_text(bot.slack.responses[0])
    assert "🔕 Muted `Wingtech` here" in answer
    assert "Still alerting: `Nexperia` (rules.yaml line 7) from rules.yaml" in answer


def test_latest_takes_a_feed_option(bot: Bot) -> None:
    assert len([line for line in bot.say("latest 3 feed:scmp").splitlines() if line.startswith("• ")]) == 3
    assert "There is no feed `other`" in bot.say("latest feed:other")


def test_a_channel_subscribes_to_a_query_and_test_explains_its_parts(bot: Bot, tmp_path: Path) -> None:
    reply = bot.say('subscribe query:Huawei NEAR/5 chip* -"trade war"', channel=CHINA)
    assert 'now gets alerts for `query: Huawei NEAR/5 chip* -"trade war"`' in reply
    explained = bot.say("test Huawei unveils AI chips", channel=CHINA)
    assert 'query `Huawei NEAR/5 chip* -"trade war"` ✅ matches' in explained
    assert '✅ `Huawei` · ✅ `chip*` · ▫️ `"trade war"` (NOT)' in explained

    bot.publish(HUAWEI_NEWS)  # "Huawei unveils a new AI chip"
    bot.poll()
    [alert] = bot.slack.posts_to(CHINA)
    assert "matched `Huawei`, `chip*`" in reply_text(alert)

    snippet = bot.say("export", channel=CHINA).split("```")[1]
    assert yaml.safe_load(snippet)["channels"] == [
        {"channel": CHINA, "query": 'Huawei NEAR/5 chip* -"trade war"'}
    ]
    assert "Removed" in bot.say('unsubscribe query:Huawei NEAR/5 chip* -"trade war"', channel=CHINA)
    assert bot.app.store.subscriptions(CHINA) == []


def test_a_query_that_does_not_parse_says_where(bot: Bot) -> None:
    reply = bot.say("subscribe query:(chip* OR semi*", channel=CHINA)
    assert reply.startswith("That query does not parse: column 16: expected ')' to close the '(' at column 1")
    assert bot.app.store.subscriptions() == []


# -- feeds added from Slack -----------------------------------------------------------------------------

NEWS_SITE = "93.184.216.34"  # what news.example resolves to; the test network routes it to a loopback host


class Network:
    """The pretend internet of these tests: news.example is public and routed to a loopback feed host."""

    def __init__(self) -> None:
        self.resolver, self.internet = FakeResolver(), FakeInternet()
        self.fetcher = GuardedFetcher(resolver=self.resolver, network=self.internet)


@pytest.fixture
def network() -> Network:
    return Network()


@pytest.fixture
def news_host(network: Network) -> Iterator[FeedHost]:
    with running_feed_host() as host:
        host.serve("/hn", scmp_feed(drop_newest=3))
        network.internet.route(NEWS_SITE, host.url("/"))
        network.resolver.answer("news.example", NEWS_SITE)
        yield host


@pytest.fixture
def admin_bot(tmp_path, feed_host, slack, clock, network: Network) -> Iterator[Bot]:
    yield from start_bot(
        tmp_path, feed_host, slack, clock, settings=f"  admins: [{ADMIN}]\n", guarded_fetcher=network.fetcher
    )


def test_an_admin_adds_a_feed_from_slack_and_it_is_polled_like_the_others(
    admin_bot: Bot, news_host: FeedHost, tmp_path: Path
) -> None:
    bot = admin_bot
    url = "http://news.example/hn"
    assert bot.say(f"add-feed {url} id:hn", user=BOB) == (
        f"Only admins can add or remove feeds: <@{ADMIN}>. Ask one of them."
    )
    assert news_host.requests == []

    reply = bot.say(f"add-feed {url} id:hn", user=ADMIN)
    assert reply.startswith(
        "📡 Added feed `hn`: *Semiconductors: Companies - South China Morning Post*, 47 items"
    )
    assert "what it holds now is marked seen, not posted" in reply  # backfill 0 here
    assert [f.id for f in bot.app.rules.feeds] == ["scmp", "hn"]  # no restart

    assert "now gets alerts" in bot.say("subscribe Huawei feed:hn", channel=CHINA, user=ADMIN)
    bot.poll()  # its first poll: a baseline, nothing posted
    assert bot.slack.posts_to(CHINA) == [] and bot.slack.posts_to(CHIPS) == []
    news_host.serve("/hn", scmp_feed(drop_newest=3, extra_items=(HUAWEI_NEWS,)))
    bot.poll()
    [alert] = bot.slack.posts_to(CHINA)
    assert alert["text"].startswith("Huawei unveils a new AI chip")

    listed = bot.say("list", channel=CHINA)
    assert (
        f"• `hn` Semiconductors: Companies - South China Morning Post · news.example · added by <@{ADMIN}>"
        in listed
    )
    assert bot.http.get(bot.detail_url + "/healthz").json()["feeds"]["hn"]["items_seen"] == 48
    snippet = bot.say("export", channel=CHINA).split("```")[1]
    assert yaml.safe_load(snippet)["feeds"] == [{"id": "hn", "url": url}]

    # Kept across a restart.
    bot.app.close()
    again = build_app(
        environment_from(
            {"BOT_RULES": str(tmp_path / "rules.yaml"), "BOT_DB": str(tmp_path / "state.json")}, tmp_path
        ),
        sleep=bot.clock.sleep,
        now=bot.clock,
    )
    try:
        [added] = [f for f in again.rules.feeds if f.id == "hn"]
        assert added.url == url and added.added is not None and added.added.added_by == ADMIN
    finally:
        again.close()


def test_removing_a_feed_from_slack_stops_its_polls_and_the_topics_only_it_fed(
    admin_bot: Bot, news_host: FeedHost
) -> None:
    bot = admin_bot
    bot.say("add-feed http://news.example/hn id:hn", user=ADMIN)
    bot.say("subscribe Huawei feed:hn", channel=CHINA, user=ADMIN)
    bot.say("subscribe Nexperia", channel=CHINA, user=ADMIN)
    bot.poll()
    polls = len(news_host.requests)

    assert bot.say("remove-feed scmp", user=ADMIN) == (
        "`scmp` is managed in rules.yaml line 5, so not removable from Slack."
    )
    assert "Only admins" in bot.say("remove-feed hn", user=BOB)
    reply = bot.say("remove-feed hn", user=ADMIN)
    assert reply.startswith("🗑 Removed feed `hn`")
    assert f"Removed with it, as they watched only this feed: `Huawei` in <#{CHINA}>." in reply
    assert [f.id for f in bot.app.rules.feeds] == ["scmp"]
    assert [s.term for s in bot.app.store.subscriptions(CHINA)] == ["Nexperia"]
    bot.poll()
    assert len(news_host.requests) == polls  # no longer polled
    assert "hn" not in bot.http.get(bot.detail_url + "/healthz").json()["feeds"]


def test_a_feed_on_a_private_address_is_refused_from_slack(
    admin_bot: Bot, network: Network, feed_host: FeedHost, caplog: pytest.LogCaptureFixture
) -> None:
    """The loopback feed host stands for a service on the bot's own network. The reply names the kind of
    refusal; which address a name resolves to is for the log (told to anyone, it maps the network)."""
    caplog.set_level("INFO")
    bot = admin_bot
    secret = feed_host.serve("/internal", scmp_feed())
    network.resolver.answer("intranet.example", "127.0.0.1")
    port = secret.split(":")[2].split("/")[0]
    for url, refusal in (
        (f"http://intranet.example:{port}/internal", "intranet.example resolves to 127.0.0.1, a loopback"),
        (secret, "127.0.0.1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://[::ffff:127.0.0.1]/internal", "(the IPv4-mapped form of 127.0.0.1)"),
        ("http://[::ffff:0:127.0.0.1]/internal", "(the IPv4-translated form of 127.0.0.1)"),
    ):
        caplog.clear()
        reply = bot.say(f"add-feed {url}", user=ADMIN)
        assert reply == "Could not add that feed: refused: not a public address. Nothing was changed.", url
        assert refusal in caplog.text
    assert "file paths are for rules.yaml" in bot.say("add-feed file:///etc/passwd", user=ADMIN)
    assert feed_host.requests_for("/internal") == []
    assert bot.app.store.added_feeds() == [] and [f.id for f in bot.app.rules.feeds] == ["scmp"]


def test_allow_private_feeds_lets_a_feed_on_this_host_be_added(tmp_path, feed_host, slack, clock) -> None:
    for bot in start_bot(tmp_path, feed_host, slack, clock, settings="  allow_private_feeds: true\n"):
        url = feed_host.serve("/local", scmp_feed())
        assert bot.say(f"add-feed {url} id:local").startswith("📡 Added feed `local`")
        bot.poll()
        assert len(feed_host.requests_for("/local")) == 2  # the trial, then its first poll
        # never, even so
        assert "refused: not a public address" in bot.say("add-feed http://169.254.169.254/ id:meta")


EIGHT_ADMINS = [f"U0ADMIN{n:02}" for n in range(8)]  # one command each: a person may have 2 slow ones going


@pytest.fixture
def eight_admins_bot(tmp_path, feed_host, slack, clock, network: Network) -> Iterator[Bot]:
    settings = f"  admins: [{', '.join(EIGHT_ADMINS)}]\n"
    yield from start_bot(tmp_path, feed_host, slack, clock, settings, guarded_fetcher=network.fetcher)


def test_concurrent_add_feeds_never_pass_the_cap_of_100(eight_admins_bot: Bot, news_host: FeedHost) -> None:
    """98 feeds, then 8 admins' add-feeds at once, each fetch held open until all that reached the host are
    in: two slots are left, so two are fetched and added, six refused without a fetch."""
    bot = eight_admins_bot
    for n in range(98):
        bot.app.store.add_feed(AddedFeed(f"f{n}", f"http://news.example/f{n}", ADMIN, bot.clock()))
    bot.app.refresh_rules()
    for n in range(8):
        news_host.serve(f"/new{n}", scmp_feed(drop_newest=3))
    gate, arrived = threading.Event(), []
    answer = news_host.respond

    def held(path: str, headers: dict[str, str]):
        arrived.append(path)
        gate.wait(timeout=30)
        return answer(path, headers)

    news_host.respond = held  # type: ignore[method-assign]
    replies: list[str] = []

    def add(n: int) -> None:
        replies.append(bot.say(f"add-feed http://news.example/new{n} id:new{n}", user=EIGHT_ADMINS[n]))

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    refusals = lambda: [r for r in replies if "There are already 100 feeds added from Slack" in r]  # noqa: E731
    # Every add-feed has been refused or is fetching (its request held at the host); or more than the two
    # free slots are fetching at once, which is the race itself.
    wait_for(lambda: len(arrived) > 2 or len(refusals()) + len(arrived) == 8)
    gate.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(bot.app.store.added_feeds()) == 100
    assert len(refusals()) == 6
    assert len([text for text in replies if text.startswith("📡 Added feed")]) == 2


def test_export_shows_a_feeds_token_only_to_an_admin_and_to_whoever_added_it(
    tmp_path, feed_host, slack, clock, network: Network, news_host: FeedHost
) -> None:
    news_host.serve("/hn?token=s3cret&points=100", scmp_feed(drop_newest=3))
    url = "http://news.example/hn?token=s3cret&points=100"
    redacted = "http://news.example/hn?token=REDACTED&points=REDACTED"
    settings = f"  admins: [{ADMIN}]\n"
    for bot in start_bot(tmp_path, feed_host, slack, clock, settings, guarded_fetcher=network.fetcher):
        assert bot.say(f"add-feed {url} id:hn", user=ADMIN).startswith("📡 Added feed `hn`")
        reply = html.unescape(bot.say("export", channel=CHINA, user=BOB))  # as Slack shows it
        assert yaml.safe_load(reply.split("```")[1])["feeds"] == [{"id": "hn", "url": redacted}]
        assert "s3cret" not in reply
        assert "Parts of the URL of `hn` are shown as REDACTED" in reply
        whole = html.unescape(bot.say("export", channel=CHINA, user=ADMIN))
        assert yaml.safe_load(whole.split("```")[1])["feeds"] == [{"id": "hn", "url": url}]


def test_without_admins_only_whoever_added_a_feed_sees_its_token_in_export(
    tmp_path, feed_host, slack, clock, network: Network, news_host: FeedHost
) -> None:
    news_host.serve("/hn?token=s3cret", scmp_feed(drop_newest=3))
    url = "http://news.example/hn?token=s3cret"
    for bot in start_bot(tmp_path, feed_host, slack, clock, guarded_fetcher=network.fetcher):
        assert bot.say(f"add-feed {url} id:hn", user=ALICE).startswith("📡 Added feed `hn`")
        shown = {
            user: yaml.safe_load(bot.say("export", user=user).split("```")[1])["feeds"][0]["url"]
            for user in (ALICE, BOB)
        }
        assert shown == {ALICE: url, BOB: "http://news.example/hn?token=REDACTED"}


# -- what belongs to private channels -------------------------------------------------------------------

SECRET_CHANNEL = "C0SECRET1"  # a private channel the bot was invited to; Bob is in it, Alice is not
FALCON = rss_item(
    "Project Falcon: the board weighs a merger",
    "https://intranet.example/falcon-1",
    published="Mon, 01 Jun 2026 08:10:00 +0000",
)
FALCON_NEXT = rss_item(
    "Project Falcon: the merger is signed",
    "https://intranet.example/falcon-2",
    published="Mon, 01 Jun 2026 08:50:00 +0000",
)


@pytest.fixture
def private_feed_bot(bot: Bot, tmp_path: Path) -> Bot:
    """rules.yaml gains a feed that only the private channel follows (visibility: channels, the default)."""
    bot.slack.add_channel(SECRET_CHANNEL, "deals", private=True, member=True)
    bot.slack.state.members.update({ALICE: {CHINA}, BOB: {SECRET_CHANNEL, CHINA}})
    falcon_url = bot.feed_host.serve("/falcon", scmp_feed(drop_newest=47, extra_items=(FALCON,)))
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "settings:\n  backfill: 0\n"
        f"feeds:\n  - id: scmp\n    url: {bot.feed_host.url('/feed')}\n"
        f"  - id: deals\n    url: {falcon_url}\n"
        f"channels:\n  - channel: {CHIPS}\n    feeds: [scmp]\n    keywords: [Nexperia]\n"
        f"  - channel: {SECRET_CHANNEL}\n    feeds: [deals]\n    keywords: [Falcon]\n"
    )
    assert bot.app.reload_rules_if_changed()
    bot.poll()  # deals' first poll: its item is archived, nothing posted
    return bot


def test_a_feed_only_a_private_channel_follows_is_searchable_by_its_members_only(
    private_feed_bot: Bot,
) -> None:
    bot = private_feed_bot
    assert bot.say("search falcon", user=ALICE) == (
        "Nothing found for falcon among the items seen in the last 30 days."
    )
    assert "There is no feed `deals`. Feeds: `scmp`." in bot.say("search falcon feed:deals", user=ALICE)
    assert "Project Falcon: the board weighs a merger" in bot.say("search falcon", user=BOB)
    assert "Project Falcon" in bot.say("search falcon feed:deals", user=BOB)
    assert "Nexperia" in bot.say("search nexperia", user=ALICE)  # a public channel's feed: everyone

    # latest, and the preview of a subscription, read the same archive.
    bot.say("subscribe Falcon", channel="D0ALICE01", user=ALICE)
    assert "Project Falcon" not in bot.say("latest", channel="D0ALICE01", user=ALICE)
    preview = bot.say("subscribe merger", channel="D0ALICE01", user=ALICE)
    assert "Project Falcon" not in preview and "Nothing like this in the archive yet." in preview
    assert "Project Falcon" in bot.say("subscribe Falcon", channel="D0BOB0001", user=BOB)


def test_a_personal_watch_gets_nothing_from_a_feed_its_owner_may_not_read(private_feed_bot: Bot) -> None:
    bot = private_feed_bot
    refusal = bot.say("subscribe Falcon feed:deals", channel="D0ALICE01", user=ALICE)
    assert refusal.startswith("There is no feed `deals`. Feeds: `scmp`.")
    bot.say("subscribe Falcon", channel="D0ALICE01", user=ALICE)  # every feed she may read
    bot.say("subscribe Falcon feed:deals", channel="D0BOB0001", user=BOB)
    bot.feed_host.serve("/falcon", scmp_feed(drop_newest=47, extra_items=(FALCON_NEXT, FALCON)))
    bot.poll()
    assert bot.slack.posts_to(bot.slack.state.dms[ALICE]) == []
    [bobs] = bot.slack.posts_to(bot.slack.state.dms[BOB])
    assert bobs["text"].startswith("Project Falcon: the merger is signed")
    assert len(bot.slack.posts_to(SECRET_CHANNEL)) == 1  # the channel itself, as ever


def test_list_remove_feed_and_app_home_name_a_private_channels_feed_to_its_members_only(
    private_feed_bot: Bot,
) -> None:
    bot = private_feed_bot
    assert "`deals`" not in bot.say("list", user=ALICE)
    assert "`deals`" in bot.say("list", user=BOB)
    assert "Feeds: `scmp`." in bot.say("remove-feed nosuch", user=ALICE)
    for user in (ALICE, BOB):
        response = bot.event({"type": "app_home_opened", "user": user, "channel": "D0SOMEDM1", "tab": "home"})
        assert response.status_code == 200
    wait_for(lambda: len(bot.slack.state.views) == 2)
    shown = {view["user_id"]: reply_text(view["view"]) for view in bot.slack.state.views}
    assert "*deals*" not in shown[ALICE] and "*scmp*" in shown[ALICE]
    assert "*deals*" in shown[BOB]


def test_a_feed_marked_public_is_readable_by_everyone(private_feed_bot: Bot, tmp_path: Path) -> None:
    bot = private_feed_bot
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules.read_text().replace("  - id: deals\n", "  - id: deals\n    visibility: public\n"))
    assert bot.app.reload_rules_if_changed()
    assert "Project Falcon" in bot.say("search falcon", user=ALICE)


def test_a_personal_watch_follows_its_owner_joining_and_leaving_the_private_channel(
    private_feed_bot: Bot,
) -> None:
    """Slack's answers are kept 5 minutes; under `run` the watches are re-merged as often."""
    bot = private_feed_bot
    assert bot.app.client is not None
    minutes = [0.0]
    bot.app.directory = ChannelDirectory(bot.app.client, clock=lambda: minutes[0] * 60)
    bot.say("subscribe Falcon", channel="D0ALICE01", user=ALICE)
    alices_dm = bot.slack.state.dms[ALICE]

    bot.slack.state.members[ALICE] = {CHINA, SECRET_CHANNEL}  # she joins
    minutes[0] = 4
    bot.app.refresh_personal_watches_if_due()  # not yet: Slack's last answer still holds
    bot.feed_host.serve("/falcon", scmp_feed(drop_newest=47, extra_items=(FALCON_NEXT, FALCON)))
    bot.poll()
    assert bot.slack.posts_to(alices_dm) == []

    minutes[0] = 5
    bot.app.refresh_personal_watches_if_due()
    third = rss_item("Project Falcon: regulators approve", "https://intranet.example/falcon-3")
    bot.feed_host.serve("/falcon", scmp_feed(drop_newest=47, extra_items=(third, FALCON_NEXT, FALCON)))
    bot.poll()
    assert [p["text"].split(" https")[0] for p in bot.slack.posts_to(alices_dm)] == [
        "Project Falcon: regulators approve"
    ]

    bot.slack.state.members[ALICE] = {CHINA}  # and leaves
    minutes[0] = 10
    bot.app.refresh_personal_watches_if_due()
    fourth = rss_item("Project Falcon: the deal closes", "https://intranet.example/falcon-4")
    bot.feed_host.serve("/falcon", scmp_feed(drop_newest=47, extra_items=(fourth, third, FALCON_NEXT)))
    bot.poll()
    assert len(bot.slack.posts_to(alices_dm)) == 1


def test_a_public_channels_subscription_for_every_feed_never_carries_a_private_channels_feed(
    private_feed_bot: Bot,
) -> None:
    bot = private_feed_bot
    bot.say("subscribe Falcon", channel=CHINA, user=ALICE)  # #china is public: anyone may read it
    bot.feed_host.serve("/falcon", scmp_feed(drop_newest=47, extra_items=(FALCON_NEXT, FALCON)))
    bot.poll()
    assert bot.slack.posts_to(CHINA) == []
    assert len(bot.slack.posts_to(SECRET_CHANNEL)) == 1
    assert "There is no feed `deals`" in bot.say("subscribe Falcon feed:deals", channel=CHINA, user=ALICE)
