"""A rules.yaml feed's host redirecting the bot into its own network, through the real bot: the feed on one
loopback feed host, "the internal service" on another loopback port, signed commands to the real endpoint.
The operator chose the feed's host (loopback here, which is fine); a redirect off it is not the operator's
choice, and is checked like a feed added from Slack."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.errors import FetchError
from bot.fetch import HttpFetcher
from tests.conftest import Clock, rss_item, scmp_feed
from tests.fake_network import FakeInternet, FakeResolver
from tests.feed_host import FeedHost, running_feed_host
from tests.slack_standin import SlackStandIn
from tests.test_slack_app import ALICE, CHIPS, Bot, reply_text, start_bot, wait_for

# What only the internal service holds: an item #chips would be alerted to (it watches Nexperia).
INTERNAL_ITEM = rss_item("Nexperia payroll export INTERNAL-ONLY", "https://intranet.example/payroll")


@pytest.fixture
def internal_service() -> Iterator[FeedHost]:
    with running_feed_host() as host:
        host.serve("/internal", scmp_feed(drop_newest=3, extra_items=(INTERNAL_ITEM,)))
        yield host


NOTICE_AT_ONCE = "  feed_failure_notice_after: 1\n"


@pytest.fixture
def bot(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> Iterator[Bot]:
    """The bot, its feed polled once (a baseline); a failing feed's notice goes out at the first failure."""
    yield from start_bot(tmp_path, feed_host, slack, clock, settings=NOTICE_AT_ONCE)


@pytest.fixture
def private_bot(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> Iterator[Bot]:
    """The same, with `allow_private_feeds: true`."""
    settings = NOTICE_AT_ONCE + "  allow_private_feeds: true\n"
    yield from start_bot(tmp_path, feed_host, slack, clock, settings=settings)


def home_text(bot: Bot) -> str:
    bot.event({"type": "app_home_opened", "user": ALICE, "channel": "D0SOMEDM1", "tab": "home"})
    wait_for(lambda: bot.slack.state.views)
    return reply_text(bot.slack.state.views[-1]["view"])


def test_a_rules_yaml_feed_redirecting_to_another_local_port_is_refused_and_nothing_is_archived(
    bot: Bot, feed_host: FeedHost, internal_service: FeedHost, caplog: pytest.LogCaptureFixture
) -> None:
    feed_host.redirect("/feed", internal_service.url("/internal"))
    caplog.set_level(logging.INFO)
    bot.poll()

    assert internal_service.requests == []  # refused before connecting: nothing reached the service
    assert "Nothing found for INTERNAL-ONLY" in bot.say("search INTERNAL-ONLY")
    [notice] = bot.slack.posts_to(CHIPS)  # no alert; the notice that the feed fails (after 1 here)
    assert ": `refused: not a public address`. No alerts come from it" in notice["text"]
    # Shown: the kind only. The address and port the feed host pointed at are for the log.
    port = internal_service.url("/").split(":")[2].rstrip("/")
    status = bot.app.status()["feeds"]["scmp"]
    assert status["last_error"] == "refused: not a public address"
    assert "(1 in a row): `refused: not a public address`\n" in home_text(bot)
    assert port not in str(bot.app.status()) and port not in notice["text"]
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("poll feed=scmp ")]
    assert "redirected off the feed's host: not a public address: 127.0.0.1 is a loopback address" in line

    # A redirect that stays on the feed's host and port (another path) is followed as before.
    plant = rss_item("Nexperia opens a plant", "https://www.scmp.com/tech/plant")
    feed_host.serve("/moved", scmp_feed(drop_newest=3, extra_items=(plant,)))
    feed_host.redirect("/feed", "/moved")
    bot.poll()
    assert sorted(p["text"][:22] for p in bot.slack.posts_to(CHIPS)[1:]) == [
        "Nexperia opens a plant",
        "✅ Feed *scmp* works ag",
    ]


def test_with_allow_private_feeds_a_redirect_to_another_local_port_is_followed(
    private_bot: Bot, feed_host: FeedHost, internal_service: FeedHost
) -> None:
    bot = private_bot
    feed_host.redirect("/feed", internal_service.url("/internal"))
    bot.poll()
    assert len(internal_service.requests) == 1
    [alert] = bot.slack.posts_to(CHIPS)
    assert alert["text"].startswith("Nexperia payroll export INTERNAL-ONLY")
    assert "Nexperia payroll export INTERNAL-ONLY" in bot.say("search INTERNAL-ONLY")
    assert bot.app.status()["feeds"]["scmp"]["last_error"] is None


def test_what_is_shown_of_a_failing_feed_cannot_tell_a_closed_port_from_an_open_one(
    private_bot: Bot, feed_host: FeedHost, internal_service: FeedHost, caplog: pytest.LogCaptureFixture
) -> None:
    """The old port-scan oracle: /healthz said "connection refused" for a closed port and "looks like HTML"
    for an open one. Now each says its kind; the log keeps the detail for the operator."""
    internal_service.serve("/page", b"<!DOCTYPE html><html><body>admin</body></html>", "text/html")
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{unused.getsockname()[1]}/feed"
    caplog.set_level(logging.INFO)
    bot = private_bot
    shown = {}
    for name, target in (("closed", closed_url), ("html", internal_service.url("/page"))):
        feed_host.redirect("/feed", target)
        bot.poll()
        shown[name] = (bot.app.status()["feeds"]["scmp"]["last_error"], home_text(bot))
    assert shown["closed"][0] == "network error" and shown["html"][0] == "not a feed"
    for error, home in shown.values():
        for detail in ("refused", "Errno", "ConnectError", "HTML", "html"):
            assert detail not in error and detail not in home.split("Latest alerts")[0]
    assert "not a feed: looks like HTML" in caplog.text and "ConnectError" in caplog.text
    [notice] = bot.slack.posts_to(CHIPS)  # at the first failure (after 1 here), and only then
    assert " UTC: `network error`. No alerts come from it meanwhile" in notice["text"]


def test_a_redirect_off_the_feeds_host_resolves_once_and_connects_only_to_the_address_it_checked(
    feed_host: FeedHost, internal_service: FeedHost
) -> None:
    """The fetcher alone, on a pretend internet: news.example is public (routed to a loopback server);
    rebind.example answers a public address to the check and 127.0.0.1 to any later lookup."""
    resolver, internet = FakeResolver(), FakeInternet()
    internet.route("93.184.216.34", internal_service.url("/"))
    resolver.answer("news.example", "93.184.216.34")
    resolver.answer("rebind.example", "93.184.216.34")
    resolver.then("rebind.example", "127.0.0.1")
    resolver.answer("intranet.example", "10.0.0.7")
    fetcher = HttpFetcher(resolver=resolver, network=internet)
    try:
        feed_host.redirect("/public", "http://news.example/internal")
        assert b"INTERNAL-ONLY" in fetcher.fetch(feed_host.url("/public")).body  # a public host: followed

        feed_host.redirect("/rebind", "http://rebind.example/internal")
        fetcher.fetch(feed_host.url("/rebind"))
        assert resolver.lookups.count("rebind.example") == 1  # one lookup, and the checked answer used
        assert internet.connections == ["93.184.216.34", "93.184.216.34"]

        feed_host.redirect("/private", "http://intranet.example/internal")
        with pytest.raises(FetchError, match=r"intranet\.example resolves to 10\.0\.0\.7, a private address"):
            fetcher.fetch(feed_host.url("/private"))
        assert internet.connections == ["93.184.216.34", "93.184.216.34"]  # never connected
        feed_host.redirect("/secret", "http://user:pw@news.example/internal")
        with pytest.raises(FetchError, match=r"^redirected to a refused URL: URLs with a user name"):
            fetcher.fetch(feed_host.url("/secret"))
    finally:
        fetcher.close()
