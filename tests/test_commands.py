"""The slash command's pure core: parsing what people type, and answers computed from data alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from bot.commands import (
    Command,
    CommandError,
    export_snippet,
    parse_command,
    parse_count,
    parse_pause,
    search_archive,
)
from bot.model import AddedFeed, ChannelRule, FeedConfig, Item, Location, RuleSet, Settings, Subscription
from bot.service import CommandService, Invocation, merge_rules
from bot.store import ArchivedItem, Store

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
    terms = [f"semiconductor{n:03}" for n in range(150)]
    subscribed = commands.handle(Invocation(text="subscribe " + " ".join(terms), channel="C1", user="U1"))
    exported = commands.handle(Invocation(text="export", channel="C1", user="U1", channel_name="chips"))
    listed = commands.handle(Invocation(text="list", channel="C1", user="U1"))
    for reply in (subscribed, exported, listed):
        texts = [block["text"]["text"] for block in reply.blocks if "text" in block]
        assert all(len(text) <= 3000 for text in texts)
        assert all(term in "".join(texts) for term in terms)
    parts = [block["text"]["text"] for block in exported.blocks[1:]]
    snippet = "\n".join(part.removeprefix("```\n").removesuffix("\n```") for part in parts)
    assert len(parts) > 1 and yaml.safe_load(snippet)["channels"][0]["keywords"] == terms


def test_text_people_type_is_echoed_escaped() -> None:
    commands = service(Store.in_memory())
    for text in ("latest <!channel>", "search x days:<!here>", "pause <!channel>", "subscribe <@U1>*x"):
        reply = commands.handle(Invocation(text=text, channel="C1", user="U1"))
        assert "<!" not in reply.text and "<@" not in reply.text, reply.text


FILE_FEED = FeedConfig("scmp", "https://www.scmp.com/rss/519752/feed", 120, Location("rules.yaml", 5))


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
