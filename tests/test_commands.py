"""The slash command's pure core: parsing what people type, and answers computed from data alone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import yaml

import bot.service as service_module
from bot.commands import (
    VERBS,
    Command,
    CommandError,
    export_snippet,
    feed_id_from_url,
    help_reply,
    parse_command,
    parse_count,
    parse_pause,
    redact_urls,
    search_archive,
)
from bot.errors import FeedError, FetchError
from bot.model import (
    AddedFeed,
    ChannelRule,
    FeedConfig,
    Item,
    Location,
    ParsedFeed,
    RuleSet,
    Settings,
    Subscription,
)
from bot.service import CommandService, Invocation, merge_rules
from bot.store import ArchivedItem, CycleChange, Store
from tests.conftest import REPO
from tests.slack_standin import block_problem, visible_text

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Command("help")),
        ("  help ", Command("help", text="")),
        ("frobnicate x", Command("help", unknown="frobnicate")),
        (
            'subscribe Huawei "scaling law"',
            Command("subscribe", ("Huawei", "scaling law"), 'Huawei "scaling law"'),
        ),
        (
            "subscribe “export controls” sanction*",
            Command("subscribe", ("export controls", "sanction*"), "“export controls” sanction*"),
        ),
        ("SUB Nexperia feed:scmp", Command("subscribe", ("Nexperia",), "Nexperia feed:scmp", feed="scmp")),
        ("search nexperia days:7", Command("search", ("nexperia",), "nexperia days:7", days=7)),
        ('search "feed:x"', Command("search", ("feed:x",), '"feed:x"')),  # quoted: a term, not an option
        ("unsubscribe all", Command("unsubscribe", ("all",), "all")),
        ("test Nexperia wins “big”", Command("test", text="Nexperia wins “big”")),
        (
            "subscribe 'scaling law' Huawei's",  # a single-quoted phrase; an apostrophe stays in its word
            Command("subscribe", ("scaling law", "Huawei's"), "'scaling law' Huawei's"),
        ),
        ("pause 2h", Command("pause", text="2h")),
        ("latest 3", Command("latest", ("3",), "3")),
        ("add-feed", Command("add-feed")),
        (
            "add-feed https://hnrss.org/frontpage id:hn",
            Command("add-feed", url="https://hnrss.org/frontpage", feed="hn"),
        ),
        (
            "ADD-FEED ID:hn <https://hnrss.org/frontpage?points=100|hnrss.org/frontpage>",  # as Slack links
            Command("add-feed", url="https://hnrss.org/frontpage?points=100", feed="hn"),
        ),
        ("remove-feed hn", Command("remove-feed", feed="hn")),
        ("remove-feed", Command("remove-feed")),
    ],
)
def test_parse_command(text: str, expected: Command) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("search x days:0", "`days:` needs a number of days, like `days:30` (got `0`)."),
        ("search x days:", "`days:` needs a number of days"),
        ("subscribe x feed:", "`feed:` needs a feed id"),
        ("subscribe ch*ip", "Cannot use ch*ip: 'ch*ip': '*' is only allowed at the end of a word"),
        ('subscribe "!!"', "Cannot use !!: '!!' must contain at least one letter or digit"),
        ("add-feed /etc/passwd", "Cannot add that feed: give a whole http or https URL"),
        ("add-feed file:///etc/passwd", "Cannot add that feed: file paths are for rules.yaml"),
        ("add-feed gopher://example.com/", "Cannot add that feed: only http and https URLs can be fetched"),
        (
            "add-feed https://me:hunter2@example.com/feed",
            "Cannot add that feed: URLs with a user name or password are refused",
        ),
        ("add-feed https:///feed", "Cannot add that feed: the URL has no host."),
        ("add-feed https://a.example/ https://b.example/", "`add-feed` takes one URL"),
        ("add-feed https://a.example/ id:a/b", "A feed id is up to 40 letters, digits"),
        ("add-feed https://a.example/ id:", "A feed id is up to 40 letters, digits"),
        ("remove-feed a b", "`remove-feed` takes one feed id"),
    ],
)
def test_malformed_commands_say_what_to_type(text: str, message: str) -> None:
    with pytest.raises(
        CommandError, match="^" + message.replace("*", r"\*").replace("(", r"\(").replace(")", r"\)")
    ):
        parse_command(text)


def test_pause_durations() -> None:
    assert parse_pause("2h", NOW) == NOW + timedelta(hours=2)
    with pytest.raises(CommandError, match="Pause for how long"):
        parse_pause("", NOW)
    with pytest.raises(CommandError, match="at most 30 days"):
        parse_pause("31d", NOW)


def test_latest_counts() -> None:
    assert (parse_count(""), parse_count("3"), parse_count("500")) == (5, 3, 20)
    with pytest.raises(CommandError):
        parse_count("-1")


def archived(title: str, link: str, hours_ago: int, feed: str = "a") -> ArchivedItem:
    item = Item(feed_id=feed, key=link, link=link, title=title, published=NOW - timedelta(hours=hours_ago))
    return ArchivedItem(item, NOW)


def test_search_is_newest_first_one_per_link_and_filters_by_feed() -> None:
    entries = [
        archived("Nexperia old", "https://e.com/1", 30),
        archived("Nexperia new", "https://e.com/2", 1),
        archived("Nexperia new, again", "https://e.com/2", 2, feed="b"),
        archived("Huawei", "https://e.com/3", 1),
    ]
    assert [e.item.title for e in search_archive(entries, ["nexperia"])] == ["Nexperia new", "Nexperia old"]
    assert [e.item.title for e in search_archive(entries, ["nexperia"], feed="b")] == ["Nexperia new, again"]


def test_merged_rules_add_one_entry_per_slack_term_and_skip_unknown_feeds() -> None:
    file_rules = RuleSet(
        Settings(), (FeedConfig("a", "https://e.com/a", 300),), (ChannelRule("C1", ("Nexperia",)),)
    )
    subs = [Subscription("C2", "Huawei", None, "U1", NOW), Subscription("C2", "SMIC", "gone", "U1", NOW)]
    merged = merge_rules(file_rules, subs)
    assert [(r.channel, r.keywords, r.feeds) for r in merged.channels] == [
        ("C1", ("Nexperia",), None),
        ("C2", ("Huawei",), None),
    ]


def test_export_snippet_keeps_phrases_and_feed_filters() -> None:
    subs = [
        Subscription("C2", "scaling law", None, "U1", NOW),
        Subscription("C2", "SMIC", "a", "U1", NOW),
    ]
    assert export_snippet("C2", "#china", subs) == (
        "# #china, exported from Slack\n"
        "channels:\n- channel: C2\n  keywords:\n  - scaling law\n"
        "- channel: C2\n  feeds:\n  - a\n  keywords:\n  - SMIC\n"
    )


def service(store: Store) -> CommandService:
    rules = RuleSet(
        Settings(), (FeedConfig("f", "https://e.com/f", 300), FeedConfig("g", "https://e.com/g", 300)), ()
    )
    return CommandService(
        store=store,
        rules=lambda: merge_rules(rules, store.subscriptions()),
        on_rules_changed=lambda: None,
        now=lambda: NOW,
    )


def test_mute_removes_only_the_terms_that_could_have_matched_the_alerts_feed() -> None:
    store = Store.in_memory()
    commands = service(store)
    for text in ("subscribe Huawei feed:f", "subscribe Huawei feed:g", "subscribe SMIC"):
        commands.handle(Invocation(text=text, channel="C1", user="U1"))
    commands.mute("C1", "U1", ["Huawei", "SMIC"], feed="g")
    assert [(s.term, s.feed) for s in store.subscriptions("C1")] == [("Huawei", "f")]


def test_long_answers_are_split_across_blocks_never_cut() -> None:
    store = Store.in_memory()
    commands = service(store)
    # As many as a channel takes, 20 a command (the most one takes) and from several people.
    terms = [f"semiconductor-supply-chain-{n:03}" for n in range(100)]
    for start in range(0, 100, 20):
        batch = " ".join(terms[start : start + 20])
        subscribed = commands.handle(Invocation(text="subscribe " + batch, channel="C1", user=f"U{start}"))
    exported = commands.handle(Invocation(text="export", channel="C1", user="U1", channel_name="chips"))
    listed = commands.handle(Invocation(text="list", channel="C1", user="U1"))
    for reply in (subscribed, exported):
        texts = [block["text"]["text"] for block in reply.blocks if "text" in block]
        assert all(len(text) <= 3000 for text in texts)
        assert all(term in "".join(texts) for term in terms)
    # A list this long stops within Slack's limits: the first ones in order, then how many more.
    shown = visible_text(list(listed.blocks))
    assert block_problem(list(listed.blocks)) is None
    first = [term for term in terms if term in shown]
    assert first == terms[: len(first)] and 50 < len(first) < 150
    assert re.search(r"…and \d+ more lines", shown)
    parts = [block["text"]["text"] for block in exported.blocks[1:]]
    snippet = "\n".join(part.removeprefix("```\n").removesuffix("\n```") for part in parts)
    assert len(parts) > 1 and yaml.safe_load(snippet)["channels"][0]["keywords"] == terms


def test_text_people_type_is_echoed_escaped() -> None:
    commands = service(Store.in_memory())
    for text in ("latest <!channel>", "search x days:<!here>", "pause <!channel>", "subscribe <@U1>*x"):
        reply = commands.handle(Invocation(text=text, channel="C1", user="U1"))
        assert "<!" not in reply.text and "<@" not in reply.text, reply.text


# -- feeds added from Slack ------------------------------------------------------------------------------

FILE_FEED = FeedConfig("scmp", "https://www.scmp.com/rss/519752/feed", 120, Location("rules.yaml", 5))


class FeedTrials:
    """What `add-feed` fetched and parsed; answers with a feed, or the error it is given."""

    def __init__(self) -> None:
        self.tried: list[FeedConfig] = []
        self.error: Exception | None = None

    def __call__(self, feed: FeedConfig) -> ParsedFeed:
        self.tried.append(feed)
        if self.error is not None:
            raise self.error
        items = tuple(Item(feed.id, f"k{n}", f"https://e.com/{n}", f"Story {n}") for n in range(30))
        return ParsedFeed("Hacker News:\n Front Page", items)


def feed_service(
    store: Store, trials: FeedTrials, *, admins: tuple[str, ...] = (), changes: list[str] | None = None
) -> CommandService:
    """The service as the app builds it; `changes` notes each rules ("rules") and feeds ("feeds") change."""
    file_rules = RuleSet(
        Settings(admins=admins, backfill=1), (FILE_FEED,), (ChannelRule("C1", ("Nexperia",)),)
    )
    noted = changes if changes is not None else []
    return CommandService(
        store=store,
        rules=lambda: merge_rules(file_rules, store.subscriptions(), store.added_feeds()),
        on_rules_changed=lambda: noted.append("rules"),
        on_feeds_changed=lambda: noted.append("feeds"),
        now=lambda: NOW,
        try_feed=trials,
        open_dm=lambda user: "D0DM00001",
    )


def say(commands: CommandService, text: str, *, channel: str = "C1", user: str = "U1") -> str:
    reply = commands.handle(Invocation(text=text, channel=channel, user=user))
    return visible_text(list(reply.blocks)) or reply.text


def test_an_added_feed_is_tried_once_then_kept_and_merged_with_the_files() -> None:
    store, trials, changes = Store.in_memory(), FeedTrials(), []
    commands = feed_service(store, trials, changes=changes)
    reply = say(commands, "add-feed https://hnrss.org/frontpage id:hn")
    assert reply.startswith("📡 Added feed `hn`: *Hacker News: Front Page*, 30 items now, polled every 5m")
    assert (
        "at most the newest match per rules.yaml channel that watches every feed" in reply
    )  # backfill 1: no flood
    assert "`/feeds subscribe <terms> feed:hn`" in reply
    [tried] = trials.tried
    assert (tried.id, tried.url, tried.added is not None) == ("hn", "https://hnrss.org/frontpage", True)
    assert store.added_feeds() == [
        AddedFeed("hn", "https://hnrss.org/frontpage", "U1", NOW, title="Hacker News: Front Page")
    ]
    assert changes == ["feeds"]
    merged = commands.rules().feeds
    assert [(f.id, f.interval_seconds, f.added is not None) for f in merged] == [
        ("scmp", 120, False),
        ("hn", 300, True),
    ]
    assert "There is no feed" not in say(commands, "subscribe Huawei feed:hn")


def test_an_added_feed_without_an_id_is_named_after_its_host() -> None:
    store = Store.in_memory()
    commands = feed_service(store, FeedTrials())
    say(commands, "add-feed https://www.example.com/rss")
    say(commands, "add-feed https://www.example.com/atom")
    assert [f.id for f in store.added_feeds()] == ["example.com", "example.com-2"]
    assert feed_id_from_url("https://[::1]/x", set()) == "1"
    assert feed_id_from_url("https://" + "a" * 60 + ".example/", set()) == "a" * 40


def test_the_feeds_added_from_slack_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "MAX_ADDED_FEEDS", 2)
    store, trials = Store.in_memory(), FeedTrials()
    commands = feed_service(store, trials)
    say(commands, "add-feed https://a.example/feed")
    say(commands, "add-feed https://b.example/feed")
    assert say(commands, "add-feed https://c.example/feed").startswith(
        "There are already 2 feeds added from Slack, the most the bot takes. Remove one with "
        "`/feeds remove-feed <id>`"
    )
    assert len(store.added_feeds()) == 2 and len(trials.tried) == 2  # refused before any fetch
    say(commands, "remove-feed a.example")
    assert say(commands, "add-feed https://c.example/feed").startswith("📡 Added feed `c.example`")


def test_a_feed_that_cannot_be_fetched_or_parsed_is_refused_with_the_kind_of_failure_only() -> None:
    """The detail (an internal address, "connection refused" or "looks like HTML") is for the log: told to
    whoever typed the URL, it mapped the bot's network."""
    store, trials, changes = Store.in_memory(), FeedTrials(), []
    commands = feed_service(store, trials, changes=changes)
    trials.error = FetchError(
        "not a public address: intranet.example resolves to 10.0.0.7, a private address",
        kind="refused_address",
    )
    assert say(commands, "add-feed https://intranet.example/feed") == (
        "Could not add that feed: refused: not a public address. Nothing was changed."
    )
    trials.error = FetchError("ConnectError: [Errno 111] Connection refused")
    assert say(commands, "add-feed https://example.com/a") == (
        "Could not add that feed: network error. Nothing was changed."
    )
    trials.error = FetchError("HTTP 503 Service Unavailable", status=503)
    assert say(commands, "add-feed https://example.com/b") == (
        "Could not add that feed: HTTP 503. Nothing was changed."
    )
    trials.error = FeedError("example.com", "not a feed: looks like\nHTML <b>")
    assert say(commands, "add-feed https://example.com/") == (
        "Could not add that feed: not a feed. Nothing was changed."
    )
    assert store.added_feeds() == [] and changes == []


def test_an_id_or_url_already_in_use_is_refused() -> None:
    store = Store.in_memory()
    commands = feed_service(store, FeedTrials())
    assert say(commands, "add-feed https://other.example/feed id:scmp") == (
        "There is already a feed `scmp` (rules.yaml line 5). Pick another name with `id:`."
    )
    assert say(commands, "add-feed https://www.scmp.com/rss/519752/feed") == (
        "That feed is already polled, as `scmp` (rules.yaml line 5)."
    )
    assert store.added_feeds() == []


def test_only_admins_add_or_remove_feeds_even_in_a_direct_message() -> None:
    store, trials = Store.in_memory(), FeedTrials()
    commands = feed_service(store, trials, admins=("U0ADMIN1",))
    for text in ("add-feed https://hnrss.org/frontpage", "remove-feed scmp"):
        for channel in ("C1", "D0DM00001"):
            assert say(commands, text, channel=channel, user="U2") == (
                "Only admins can add or remove feeds: <@U0ADMIN1>. Ask one of them."
            )
    assert trials.tried == [] and store.added_feeds() == []
    assert "Added feed" in say(commands, "add-feed https://hnrss.org/frontpage", user="U0ADMIN1")


def test_removing_a_feed_drops_the_subscriptions_only_it_fed_and_its_seen_state() -> None:
    store, changes = Store.in_memory(), []
    commands = feed_service(store, FeedTrials(), changes=changes)
    say(commands, "add-feed https://hnrss.org/frontpage id:hn")
    say(commands, "subscribe Huawei feed:hn", channel="C2")
    say(commands, "subscribe SMIC feed:hn", channel="D0DM00001")
    say(commands, "subscribe Nvidia", channel="C2")  # every feed: stays
    say(commands, "subscribe ASML feed:scmp", channel="C2")  # another feed: stays
    store.commit_cycle(CycleChange("hn", NOW, keys_in_feed=["k1"]))

    reply = say(commands, "remove-feed hn")
    assert reply.startswith("🗑 Removed feed `hn` (Hacker News: Front Page), added by <@U1> <!date^")
    assert (
        "Removed with it, as they watched only this feed: `Huawei` in <#C2>, `SMIC` in a personal watch. "
        "Topics for every feed stay." in reply
    )
    assert store.added_feeds() == [] and [f.id for f in commands.rules().feeds] == ["scmp"]
    assert [(s.term, s.feed) for s in store.subscriptions()] == [("Nvidia", None), ("ASML", "scmp")]
    assert store.feed_state("hn") is None and store.seen_count("hn") == 0  # a re-add is a first poll
    assert changes[-1] == "feeds"
    assert say(commands, "remove-feed hn") == "There is no feed `hn`. Feeds: `scmp`."


def test_a_rules_yaml_feed_is_not_removable_from_slack() -> None:
    store = Store.in_memory()
    commands = feed_service(store, FeedTrials())
    assert say(commands, "remove-feed scmp") == (
        "`scmp` is managed in rules.yaml line 5, so not removable from Slack."
    )
    # A feed added from Slack and later written into rules.yaml under its id: the file's wins, and
    # remove-feed drops the Slack copy, leaving the feed (and what subscribes to it) alone.
    store.add_feed(AddedFeed("scmp", "https://www.scmp.com/rss/519752/feed", "U1", NOW))
    say(commands, "subscribe Huawei feed:scmp")
    reply = say(commands, "remove-feed scmp")
    assert reply == (
        "`scmp` is managed in rules.yaml line 5, so not removable from Slack. "
        "The copy added from Slack under that id is gone; rules.yaml's stays."
    )
    assert store.added_feeds() == [] and [s.term for s in store.subscriptions()] == ["Huawei"]


def test_list_names_every_feed_and_export_carries_the_added_ones() -> None:
    store = Store.in_memory()
    commands = feed_service(store, FeedTrials())
    say(commands, "add-feed https://hnrss.org/frontpage?points=100 id:hn")
    say(commands, "subscribe Huawei feed:hn", channel="C2")
    listed = say(commands, "list", channel="C2")
    assert (
        "*Feeds*\n• `scmp` · rules.yaml line 5\n• `hn` Hacker News: Front Page · hnrss.org · added by"
        in listed
    )
    assert "points=100" not in listed  # a query may hold a token: list shows the host
    exported = commands.handle(Invocation(text="export", channel="C2", user="U1", channel_name="china"))
    assert "`feeds:` and `channels:` lists" in exported.text and "`/feeds remove-feed ID`" in exported.text
    snippet = exported.blocks[1]["text"]["text"].removeprefix("```\n").removesuffix("\n```")
    assert yaml.safe_load(snippet) == {
        "feeds": [{"id": "hn", "url": "https://hnrss.org/frontpage?points=100"}],
        "channels": [{"channel": "C2", "feeds": ["hn"], "keywords": ["Huawei"]}],
    }
    # A channel with no subscriptions of its own still exports the feeds.
    assert "feeds:" in say(commands, "export", channel="C3")


def test_merged_rules_let_the_files_feed_win_an_id_added_from_slack_too() -> None:
    file_rules = RuleSet(Settings(interval_seconds=60), (FILE_FEED,), ())
    added = [
        AddedFeed("scmp", "https://evil.example/", "U1", NOW),
        AddedFeed("hn", "https://h.example/", "U1", NOW),
    ]
    merged = merge_rules(file_rules, [], added)
    assert [(f.id, f.url, f.interval_seconds) for f in merged.feeds] == [
        ("scmp", FILE_FEED.url, 120),
        ("hn", "https://h.example/", 60),
    ]


def test_urls_in_logged_commands_lose_credentials_and_query() -> None:
    assert redact_urls("add-feed https://me:pw@example.com/rss?key=s3cret id:x") == (
        "add-feed https://…@example.com/rss?… id:x"
    )
    assert redact_urls("subscribe Huawei") == "subscribe Huawei"


@pytest.mark.parametrize("verb", [verb for verb in VERBS if verb != "help"])
def test_every_verb_is_in_the_help_and_the_readme(verb: str) -> None:
    assert f"`/feeds {verb}" in help_reply("/feeds").text
    assert f"/feeds {verb}" in (REPO / "README.md").read_text()
