"""Configuration loading: the exact one-line problems a user sees, defaults, path resolution, environment."""

from __future__ import annotations

import textwrap
from datetime import time
from pathlib import Path

import pytest

from bot.config import DEFAULT_SLACK_API_URL, Environment, environment_from, load_rules, parse_duration
from bot.errors import ConfigError
from bot.model import (
    ChannelRule,
    DailyTime,
    DailyWindow,
    Escalation,
    FeedConfig,
    Location,
    OnCall,
    RuleSet,
    Settings,
)

# Problems name the file as it was given, so every test loads "rules.yaml" from inside tmp_path.
RULES = "rules.yaml"

FEEDS = """\
feeds:
  - id: a
    url: https://example.com/a.xml
  - id: b
    url: https://example.com/b.xml
"""

CHANNELS = """\
channels:
  - channel: C0123ABCD
    keywords: [chip]
"""


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One folder for the whole module: a fresh tmp_path per test cost more than the tests themselves.
    # Every test writes the rules file it reads, so nothing leaks from one test into the next.
    return tmp_path_factory.mktemp("config")


@pytest.fixture(autouse=True)
def in_tmp_path(shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(shared_dir)
    return shared_dir


def write(text: str, name: str = RULES) -> Path:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(text: str) -> RuleSet:
    return load_rules(write(text))


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load(text)
    return list(raised.value.problems)


# ---------------------------------------------------------------------------------------------------------
# parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1), ("90s", 90), ("5m", 300), ("2h", 7200), ("1d", 86400), (" 5m ", 300), ("365d", 365 * 86400)],
)
def test_parse_duration_accepts_a_number_and_a_unit(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5 min", "'5 min' is not a duration like 30s, 5m, 2h or 1d"),
        ("5M", "'5M' is not a duration like 30s, 5m, 2h or 1d"),
        ("1.5h", "'1.5h' is not a duration like 30s, 5m, 2h or 1d"),
        ("-5m", "'-5m' is not a duration like 30s, 5m, 2h or 1d"),
        ("", "'' is not a duration like 30s, 5m, 2h or 1d"),
        ("m", "'m' is not a duration like 30s, 5m, 2h or 1d"),
        ("\uff15m", "'\uff15m' is not a duration like 30s, 5m, 2h or 1d"),  # fullwidth digit five
        ("300", "'300' needs a unit, e.g. 300s"),
        ("0s", "'0s' is too short; the minimum is 1s"),
        ("366d", "'366d' is too long; the maximum is 365d"),
        ("9" * 5000 + "s", f"'{'9' * 5000}s' is too long; the maximum is 365d"),
    ],
)
def test_parse_duration_rejects_with_a_short_message(text: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_duration(text)
    assert str(raised.value) == message


def test_parse_duration_rejects_a_bare_int_passed_at_runtime() -> None:
    with pytest.raises(ValueError, match=r"^300 needs a unit, e\.g\. 300s$"):
        parse_duration(300)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# A valid file


def test_retention_and_admins_are_read() -> None:
    rules = load("settings:\n  retention: 7d\n  admins: [U0ADMIN1, W0ADMIN2, U0ADMIN1]\n" + FEEDS + CHANNELS)
    assert rules.settings.retention_seconds == 7 * 86400
    assert rules.settings.admins == ("U0ADMIN1", "W0ADMIN2")


def test_minimal_file_gets_defaults() -> None:
    rules = load(FEEDS + CHANNELS)

    assert rules.settings == Settings(interval_seconds=300, backfill=1)
    assert rules.path == RULES
    assert rules.feeds == (
        FeedConfig("a", "https://example.com/a.xml", 300, Location(RULES, 2)),
        FeedConfig("b", "https://example.com/b.xml", 300, Location(RULES, 4)),
    )
    assert rules.channels == (ChannelRule("C0123ABCD", ("chip",), (), None, Location(RULES, 7)),)


def test_full_file_is_read_as_written() -> None:
    rules = load(
        """\
        # Alerts for the chips desk
        settings:
          interval: 10m
          backfill: 0
        feeds:
          - id: scmp-semiconductors
            url: https://www.scmp.com/rss/519752/feed
            interval: 2m
          - id: local_test.v2
            url: https://example.com/rss?a=1&b=2
        channels:
          - channel: "#chip-news"
            feeds: [scmp-semiconductors, scmp-semiconductors]
            keywords: [Nexperia, "export controls", "sanction*"]
            exclude: [Opinion]
          - channel: G01ABC
            keywords: [Huawei]
            exclude:
        """
    )

    assert rules.settings == Settings(interval_seconds=600, backfill=0)
    assert [(feed.id, feed.interval_seconds) for feed in rules.feeds] == [
        ("scmp-semiconductors", 120),
        ("local_test.v2", 600),
    ]
    assert rules.feeds[1].url == "https://example.com/rss?a=1&b=2"
    first, second = rules.channels
    assert first == ChannelRule(
        channel="#chip-news",
        keywords=("Nexperia", "export controls", "sanction*"),
        exclude=("Opinion",),
        feeds=("scmp-semiconductors",),
        location=Location(RULES, 12),
    )
    assert (second.channel, second.feeds, second.exclude, second.location) == (
        "G01ABC",
        None,
        (),
        Location(RULES, 16),
    )


def test_keywords_are_stripped_unquoted_and_deduplicated_in_order() -> None:
    rules = load(
        FEEDS
        + """\
channels:
  - channel: C0123ABCD
    keywords:
      - "  Nexperia  "
      - '"scaling law"'
      - "\u201cexport controls\u201d"
      - '" spaced "'
      - Nexperia
      - sanction*
      - '"Nexperia"'
    exclude: ['"Opinion"', Opinion, Podcast]
"""
    )

    rule = rules.channels[0]
    assert rule.keywords == ("Nexperia", "scaling law", "export controls", "spaced", "sanction*")
    assert rule.exclude == ("Opinion", "Podcast")


def test_a_lone_quote_character_is_kept() -> None:
    rules = load(FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords: ['\"Nexperia']\n")
    assert rules.channels[0].keywords == ('"Nexperia',)


@pytest.mark.parametrize(
    "channel", ["C0123ABCD", "G0123", "D9", "#general", "#chip-news_2.0", "#" + "a" * 80]
)
def test_accepted_channels(channel: str) -> None:
    rules = load(FEEDS + f"channels:\n  - channel: '{channel}'\n    keywords: [chip]\n")
    assert rules.channels[0].channel == channel


def test_relative_feed_paths_resolve_against_the_rules_folder(in_tmp_path: Path) -> None:
    rules_path = write(
        """\
        feeds:
          - {id: plain, url: feeds/a.xml}
          - {id: dotted, url: ./feeds/../b.xml}
          - {id: parent, url: ../shared/c.xml}
          - {id: absolute, url: /srv/feeds/d.xml}
          - {id: file-abs, url: "file:///srv/feeds/e.xml"}
          - {id: file-localhost, url: "file://localhost/srv/f.xml"}
          - {id: file-rel, url: "file:feeds/my%20g.xml"}
          - {id: web, url: "HTTPS://Example.com/Feed?x=1"}
        channels:
          - {channel: C0123ABCD, keywords: [chip]}
        """,
        name="conf/rules.yaml",
    )

    urls = {feed.id: feed.url for feed in load_rules(rules_path).feeds}

    conf = in_tmp_path / "conf"
    assert urls == {
        "plain": str(conf / "feeds" / "a.xml"),
        "dotted": str(conf / "b.xml"),
        "parent": str(in_tmp_path / "shared" / "c.xml"),
        "absolute": "/srv/feeds/d.xml",
        "file-abs": "file:///srv/feeds/e.xml",
        "file-localhost": "file://localhost/srv/f.xml",
        "file-rel": (conf / "feeds" / "my g.xml").as_uri(),
        "web": "HTTPS://Example.com/Feed?x=1",
    }


def test_absolute_rules_path_is_kept_in_locations(in_tmp_path: Path) -> None:
    path = in_tmp_path / RULES
    path.write_text(FEEDS + CHANNELS, encoding="utf-8")

    rules = load_rules(path)

    assert rules.path == str(path)
    assert rules.feeds[0].location == Location(str(path), 2)


def test_yaml_anchors_and_byte_order_mark_are_fine() -> None:
    Path(RULES).write_text(
        "\ufeff"
        + FEEDS
        + "channels:\n  - {channel: C1, keywords: &words [chip]}\n  - {channel: C2, keywords: *words}\n",
        encoding="utf-8",
    )
    assert [rule.keywords for rule in load_rules(RULES).channels] == [("chip",), ("chip",)]


# ---------------------------------------------------------------------------------------------------------
# One mistake, one line: (yaml text, the line the user sees)

SINGLE_MISTAKES = [
    # unknown keys, at every level
    (
        "settings:\n  interval: 5m\n  intervall: 3m\n" + FEEDS + CHANNELS,
        "rules.yaml:3: settings.intervall: unknown key "
        "(expected one of: interval, backfill, retention, admins, max_alerts_per_cycle, poll_concurrency, "
        "allow_private_feeds, feed_failure_notice_after)",
    ),
    (
        "colour: red\n" + FEEDS + CHANNELS,
        "rules.yaml:1: colour: unknown key (expected one of: settings, feeds, channels)",
    ),
    (
        FEEDS + "    title: B\n" + CHANNELS,
        "rules.yaml:6: feeds[1].title: unknown key (expected one of: id, url, interval, visibility)",
    ),
    (
        FEEDS + CHANNELS + "    exculde: [x]\n",
        "rules.yaml:9: channels[0].exculde: unknown key (expected one of: channel, feeds, keywords, query, "
        "exclude, mention, priority, ack, escalate, quiet_hours, digest)",
    ),
    (
        "yes: 1\n" + FEEDS + CHANNELS,
        "rules.yaml:1: yes: unknown key (expected one of: settings, feeds, channels)",
    ),
    (
        "[a]: 1\n" + FEEDS + CHANNELS,
        "rules.yaml:1: keys must be words, got a list",
    ),
    # duplicate keys, which PyYAML alone would silently resolve to the last one
    (
        "settings:\n  interval: 5m\n  interval: 1m\n" + FEEDS + CHANNELS,
        "rules.yaml:3: settings.interval: duplicate key (first at line 2)",
    ),
    (
        FEEDS + CHANNELS + "    keywords: [other]\n",
        "rules.yaml:9: channels[0].keywords: duplicate key (first at line 8)",
    ),
    (
        FEEDS + CHANNELS + FEEDS,
        "rules.yaml:9: feeds: duplicate key (first at line 1)",
    ),
    # settings
    (
        "settings: 5m\n" + FEEDS + CHANNELS,
        "rules.yaml:1: settings: "
        "expected a mapping of interval, backfill, retention, admins, max_alerts_per_cycle, "
        "poll_concurrency, allow_private_feeds, feed_failure_notice_after, got a string",
    ),
    (
        "settings:\n  interval: 300\n" + FEEDS + CHANNELS,
        "rules.yaml:2: settings.interval: '300' needs a unit, e.g. 300s",
    ),
    (
        "settings:\n  interval: 5 min\n" + FEEDS + CHANNELS,
        "rules.yaml:2: settings.interval: '5 min' is not a duration like 30s, 5m, 2h or 1d",
    ),
    (
        "settings:\n  interval: 0s\n" + FEEDS + CHANNELS,
        "rules.yaml:2: settings.interval: '0s' is too short; the minimum is 1s",
    ),
    (
        "settings:\n  interval:\n" + FEEDS + CHANNELS,
        "rules.yaml:2: settings.interval: expected a duration like 30s, 5m, 2h or 1d, got nothing",
    ),
    (
        "settings:\n  retention: forever\n" + FEEDS + CHANNELS,
        "rules.yaml:2: settings.retention: 'forever' is not a duration like 30s, 5m, 2h or 1d",
    ),
    (
        "settings:\n  admins: U0ADMIN1\n" + FEEDS + CHANNELS,
        "rules.yaml:2: settings.admins: expected a list of Slack user IDs like U0123ABCD, got a string",
    ),
    (
        "settings:\n  admins: [U0ADMIN1, alice]\n" + FEEDS + CHANNELS,
        "rules.yaml:2: settings.admins[1]: 'alice' is not a user ID (like U0123ABCD; in Slack: profile → ⋮ → "
        "Copy member ID)",
    ),
    (
        "settings:\n  backfill: -1\n" + FEEDS + CHANNELS,
        "rules.yaml:2: settings.backfill: must be 0 or more, got -1",
    ),
    (
        "settings:\n  backfill: true\n" + FEEDS + CHANNELS,
        "rules.yaml:2: settings.backfill: expected a whole number, got a boolean",
    ),
    (
        "settings:\n  backfill: '1'\n" + FEEDS + CHANNELS,
        "rules.yaml:2: settings.backfill: expected a whole number, got a string",
    ),
    (
        "settings:\n  backfill: 1.5\n" + FEEDS + CHANNELS,
        "rules.yaml:2: settings.backfill: expected a whole number, got a number",
    ),
    # the feeds list
    (CHANNELS, "rules.yaml:1: feeds: missing; expected a non-empty list of feeds"),
    ("feeds: []\n" + CHANNELS, "rules.yaml:1: feeds: must not be empty; list at least one entry under feeds"),
    ("feeds:\n" + CHANNELS, "rules.yaml:1: feeds: must not be empty; list at least one entry under feeds"),
    (
        "feeds:\n  a: https://example.com\n" + CHANNELS,
        "rules.yaml:2: feeds: expected a list of feeds, got a mapping",
    ),
    (
        "feeds:\n  - https://example.com/a.xml\n" + CHANNELS,
        "rules.yaml:2: feeds[0]: expected a mapping with id, url and optionally interval, got a string",
    ),
    # one feed
    (
        FEEDS + "  - id: a\n    url: https://example.com/c.xml\n" + CHANNELS,
        "rules.yaml:6: feeds[2].id: duplicate feed id 'a' (first at line 2)",
    ),
    (
        "feeds:\n  - id: scmp semis\n    url: https://example.com\n" + CHANNELS,
        "rules.yaml:2: feeds[0].id: 'scmp semis' may only contain letters, digits, '.', '_' and '-'",
    ),
    (
        'feeds:\n  - id: "a\\n\\tb"\n    url: https://example.com\n' + CHANNELS,
        "rules.yaml:2: feeds[0].id: 'a\\n\\tb' may only contain letters, digits, '.', '_' and '-'",
    ),
    (
        "feeds:\n  - id: 42\n    url: https://example.com\n" + CHANNELS,
        'rules.yaml:2: feeds[0].id: expected a string, got a number; put it in quotes: "42"',
    ),
    (
        "feeds:\n  - id: ''\n    url: https://example.com\n" + CHANNELS,
        "rules.yaml:2: feeds[0].id: must not be empty",
    ),
    (
        "feeds:\n  - url: https://example.com\n" + CHANNELS,
        "rules.yaml:2: feeds[0].id: missing; expected a short name such as scmp-semiconductors",
    ),
    (
        "feeds:\n  - id: a\n" + CHANNELS,
        "rules.yaml:2: feeds[0].url: missing; expected an http(s) URL or a file path",
    ),
    (
        "feeds:\n  - id: a\n    url: [https://example.com]\n" + CHANNELS,
        "rules.yaml:3: feeds[0].url: expected an http(s) URL or a file path, got a list",
    ),
    ("feeds:\n  - id: a\n    url: ' '\n" + CHANNELS, "rules.yaml:3: feeds[0].url: must not be empty"),
    (
        "feeds:\n  - id: a\n    url: ftp://example.com/feed\n" + CHANNELS,
        "rules.yaml:3: feeds[0].url: unsupported URL scheme 'ftp' (use http, https, file or a file path)",
    ),
    (
        "feeds:\n  - id: a\n    url: https:///feed\n" + CHANNELS,
        "rules.yaml:3: feeds[0].url: 'https:///feed' has no host name",
    ),
    (
        "feeds:\n  - id: a\n    url: https://example.com/a feed\n" + CHANNELS,
        "rules.yaml:3: feeds[0].url: 'https://example.com/a feed' contains spaces; write them as %20",
    ),
    (
        "feeds:\n  - id: a\n    url: 'http://[::1/feed'\n" + CHANNELS,
        "rules.yaml:3: feeds[0].url: 'http://[::1/feed' is not a valid URL: Invalid IPv6 URL",
    ),
    (
        "feeds:\n  - id: a\n    url: https://example.com:99999/\n" + CHANNELS,
        "rules.yaml:3: feeds[0].url: 'https://example.com:99999/' is not a valid URL: "
        "Port out of range 0-65535",
    ),
    (
        "feeds:\n  - id: a\n    url: file://feeds/a.xml\n" + CHANNELS,
        "rules.yaml:3: feeds[0].url: 'file://feeds/a.xml' names the host 'feeds'; "
        "write file:///absolute/path or file:relative/path",
    ),
    ("feeds:\n  - id: a\n    url: 'file:'\n" + CHANNELS, "rules.yaml:3: feeds[0].url: 'file:' has no path"),
    (FEEDS + "    interval: 2\n" + CHANNELS, "rules.yaml:6: feeds[1].interval: '2' needs a unit, e.g. 300s"),
    # the channels list
    (FEEDS, "rules.yaml:1: channels: missing; expected a non-empty list of channels"),
    (
        FEEDS + "channels: []\n",
        "rules.yaml:6: channels: must not be empty; list at least one entry under channels",
    ),
    (
        FEEDS + "channels:\n  - C0123ABCD\n",
        "rules.yaml:7: channels[0]: expected a mapping with channel, keywords and options, got a string",
    ),
    # the channel
    (
        FEEDS + "channels:\n  - keywords: [chip]\n",
        "rules.yaml:7: channels[0].channel: missing; expected a channel ID like C0123ABCD or a #name",
    ),
    (
        FEEDS + "channels:\n  - channel: #chip-alerts\n    keywords: [chip]\n",
        "rules.yaml:7: channels[0].channel: expected a channel ID like C0123ABCD or a #name, got nothing "
        '(a #name must be in quotes: "#chip-alerts")',
    ),
    (
        FEEDS + "channels:\n  - channel: general\n    keywords: [chip]\n",
        "rules.yaml:7: channels[0].channel: 'general' is not a channel ID like C0123ABCD or a #name "
        "(did you mean '#general'?)",
    ),
    (
        FEEDS + "channels:\n  - channel: c0123abcd!\n    keywords: [chip]\n",
        "rules.yaml:7: channels[0].channel: 'c0123abcd!' is not a channel ID like C0123ABCD or a #name",
    ),
    (
        FEEDS + "channels:\n  - channel: '#General'\n    keywords: [chip]\n",
        "rules.yaml:7: channels[0].channel: '#General' is not a valid channel name: use lowercase letters, "
        "digits, '-', '_' and '.', at most 80 characters",
    ),
    (
        FEEDS + f"channels:\n  - channel: '#{'a' * 81}'\n    keywords: [chip]\n",
        f"rules.yaml:7: channels[0].channel: '#{'a' * 81}' is not a valid channel name: "
        "use lowercase letters, digits, '-', '_' and '.', at most 80 characters",
    ),
    (
        FEEDS + "channels:\n  - channel: '#C0123ABCD'\n    keywords: [chip]\n",
        "rules.yaml:7: channels[0].channel: '#C0123ABCD': a channel ID is written without '#'",
    ),
    (
        FEEDS + "channels:\n  - channel: 12345\n    keywords: [chip]\n",
        "rules.yaml:7: channels[0].channel: expected a channel ID like C0123ABCD or a #name, got a number; "
        'put it in quotes: "12345"',
    ),
    # the feeds a channel listens to
    (
        FEEDS + CHANNELS + "    feeds: [a, nope]\n",
        "rules.yaml:9: channels[0].feeds[1]: unknown feed 'nope' (feeds are: a, b)",
    ),
    (
        FEEDS + CHANNELS + "    feeds: []\n",
        "rules.yaml:9: channels[0].feeds: must not be empty (leave out 'feeds' to use every feed)",
    ),
    (
        FEEDS + CHANNELS + "    feeds:\n",
        "rules.yaml:9: channels[0].feeds: must not be empty (leave out 'feeds' to use every feed)",
    ),
    (
        FEEDS + CHANNELS + "    feeds: a\n",
        "rules.yaml:9: channels[0].feeds: expected a list of feed ids, got a string (write [a] for just one)",
    ),
    # keywords and exclude
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n",
        "rules.yaml:7: channels[0].keywords: missing; expected a non-empty list of keywords (or a query)",
    ),
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords: []\n",
        "rules.yaml:8: channels[0].keywords: must not be empty",
    ),
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords:\n",
        "rules.yaml:8: channels[0].keywords: must not be empty",
    ),
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords: Nexperia\n",
        "rules.yaml:8: channels[0].keywords: expected a list of keywords, got a string "
        "(write [Nexperia] for just one)",
    ),
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords: {Nexperia: 1}\n",
        "rules.yaml:8: channels[0].keywords: expected a list of keywords, got a mapping",
    ),
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords: [chip, '  ']\n",
        "rules.yaml:8: channels[0].keywords[1]: must not be empty",
    ),
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords: [chip, '\"\"']\n",
        "rules.yaml:8: channels[0].keywords[1]: must not be empty",
    ),
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords: [chip, '*']\n",
        "rules.yaml:8: channels[0].keywords[1]: '*' must contain at least one letter or digit",
    ),
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords: ['?!']\n",
        "rules.yaml:8: channels[0].keywords[0]: '?!' must contain at least one letter or digit",
    ),
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords: ['ch*ip']\n",
        "rules.yaml:8: channels[0].keywords[0]: 'ch*ip': '*' is only allowed at the end of a word, "
        "as in 'sanction*'",
    ),
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords: ['chip *']\n",
        "rules.yaml:8: channels[0].keywords[0]: 'chip *': '*' must directly follow a word, as in 'sanction*'",
    ),
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords: [chip, yes]\n",
        'rules.yaml:8: channels[0].keywords[1]: expected a string, got a boolean; put it in quotes: "yes"',
    ),
    (
        FEEDS + "channels:\n  - channel: C0123ABCD\n    keywords:\n      - chip\n      - [a, b]\n",
        "rules.yaml:10: channels[0].keywords[1]: expected a string, got a list",
    ),
    (
        FEEDS + CHANNELS + "    exclude: [Opinion, '']\n",
        "rules.yaml:9: channels[0].exclude[1]: must not be empty",
    ),
    (
        FEEDS + CHANNELS + "    exclude: Opinion\n",
        "rules.yaml:9: channels[0].exclude: expected a list of words to exclude, got a string "
        "(write [Opinion] for just one)",
    ),
    # the file as a whole
    (
        "- feeds\n- channels\n",
        "rules.yaml:1: expected a mapping with settings, feeds and channels, got a list",
    ),
    ("just text\n", "rules.yaml:1: expected a mapping with settings, feeds and channels, got a string"),
    (
        "<<: {feeds: []}\n" + FEEDS + CHANNELS,
        "rules.yaml:1: <<: unknown key (expected one of: settings, feeds, channels)",
    ),
]


@pytest.mark.parametrize(("text", "expected"), SINGLE_MISTAKES)
def test_one_mistake_gives_exactly_one_line(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = """\
        channels:
          - channel: general
            feeds: [a, nope]
            keywords: []
        settings:
          backfill: yes
        feeds:
          - id: a
            url: gopher://example.com
        """

    assert problems(text) == [
        "rules.yaml:2: channels[0].channel: 'general' is not a channel ID like C0123ABCD or a #name "
        "(did you mean '#general'?)",
        "rules.yaml:3: channels[0].feeds[1]: unknown feed 'nope' (feeds are: a)",
        "rules.yaml:4: channels[0].keywords: must not be empty",
        "rules.yaml:6: settings.backfill: expected a whole number, got a boolean",
        "rules.yaml:9: feeds[0].url: unsupported URL scheme 'gopher' (use http, https, file or a file path)",
    ]


def test_three_mistakes_give_three_lines_and_the_error_text_joins_them() -> None:
    text = FEEDS + "channels:\n  - channel: C1\n    keywords: ['*', '']\n    exclude: 5\n"

    with pytest.raises(ConfigError) as raised:
        load(text)

    assert raised.value.problems == (
        "rules.yaml:8: channels[0].keywords[0]: '*' must contain at least one letter or digit",
        "rules.yaml:8: channels[0].keywords[1]: must not be empty",
        "rules.yaml:9: channels[0].exclude: expected a list of words to exclude, got a number",
    )
    assert str(raised.value) == "; ".join(raised.value.problems)


def test_a_broken_feed_is_not_reported_again_by_channels_that_name_it() -> None:
    text = """\
        feeds:
          - id: a b
            url: https://example.com
        channels:
          - channel: C1
            feeds: [a b]
            keywords: [chip]
        """

    assert problems(text) == [
        "rules.yaml:2: feeds[0].id: 'a b' may only contain letters, digits, '.', '_' and '-'",
    ]


def test_channels_are_still_checked_when_the_feeds_section_is_unusable() -> None:
    text = "feeds: 3\nchannels:\n  - channel: C1\n    feeds: [a]\n    keywords: []\n"

    assert problems(text) == [
        "rules.yaml:1: feeds: expected a list of feeds, got a number",
        "rules.yaml:5: channels[0].keywords: must not be empty",
    ]


# ---------------------------------------------------------------------------------------------------------
# Files that cannot be read or parsed: one line each


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as raised:
        load_rules("nope.yaml")
    assert raised.value.problems == ("nope.yaml: cannot read rules file: No such file or directory",)


def test_directory_instead_of_a_file(in_tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_rules(in_tmp_path)
    assert raised.value.problems == (f"{in_tmp_path}: cannot read rules file: Is a directory",)


def test_file_that_is_not_utf8() -> None:
    Path(RULES).write_bytes(b"feeds: caf\xe9\n")
    with pytest.raises(ConfigError) as raised:
        load_rules(RULES)
    assert raised.value.problems == (
        "rules.yaml: cannot read rules file: not UTF-8 text (bad byte at offset 10)",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "feeds: [a, b\nchannels: []\n",
            "rules.yaml:2:9: YAML syntax error: expected ',' or ']', but got ':'",
        ),
        (
            "feeds:\n\t- id: a\n",
            "rules.yaml:2:1: YAML syntax error: found character '\\t' that cannot start any token",
        ),
        ("feeds: *nope\n", "rules.yaml:1:8: YAML syntax error: found undefined alias 'nope'"),
        (
            "feeds: []\n---\nchannels: []\n",
            "rules.yaml:2:1: YAML syntax error: "
            "expected a single document in the stream, but found another document",
        ),
        ("feeds: \x07\n", "rules.yaml:1:8: YAML syntax error: character #x0007 is not allowed"),
        ("feeds:\n" + "- " * 1000 + "x\n", "rules.yaml: YAML syntax error: nested too deeply"),
    ],
)
def test_yaml_syntax_errors(text: str, expected: str) -> None:
    Path(RULES).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_rules(RULES)
    assert raised.value.problems == (expected,)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "~\n"])
def test_empty_file(text: str) -> None:
    assert problems(text) == ["rules.yaml:1: the file is empty; expected settings, feeds and channels"]


def test_python_tags_are_never_constructed() -> None:
    text = FEEDS + (
        "channels:\n  - channel: C1\n"
        "    keywords: [!!python/object/apply:os.system ['echo hi'], !!python/name:os.system x, !local y]\n"
    )
    assert problems(text) == [
        "rules.yaml:8: channels[0].keywords[0]: expected a string, got a list",
        "rules.yaml:8: channels[0].keywords[1]: expected a string, "
        "got a value tagged !!python/name:os.system",
        "rules.yaml:8: channels[0].keywords[2]: expected a string, got a value tagged !local",
    ]


# ---------------------------------------------------------------------------------------------------------
# Environment


def test_environment_defaults(in_tmp_path: Path) -> None:
    environment = environment_from({}, in_tmp_path)

    assert environment == Environment(
        slack_token=None,
        slack_api_url="https://slack.com/api/",
        rules_path=in_tmp_path / "rules.yaml",
        db_path=in_tmp_path / "data" / "state.json",
    )
    assert DEFAULT_SLACK_API_URL == "https://slack.com/api/"


def test_environment_reads_every_variable_and_resolves_paths_against_cwd(in_tmp_path: Path) -> None:
    environment = environment_from(
        {
            "SLACK_BOT_TOKEN": "xoxb-secret",
            "SLACK_API_URL": "http://localhost:8080/api",
            "BOT_RULES": "conf/rules.yaml",
            "BOT_DB": "/var/lib/feedwatch/state.json",
            "SLACK_SIGNING_SECRET": "signing-secret",
            "SLACK_APP_TOKEN": "xapp-secret",
            "PORT": "8081",
            "METRICS_PORT": "9100",
            "METRICS_HOST": "0.0.0.0",
            "BOT_COMMAND": "/news",
            "UNRELATED": "ignored",
        },
        in_tmp_path,
    )
    assert (environment.signing_secret, environment.app_token) == ("signing-secret", "xapp-secret")
    assert (environment.port, environment.command, environment.interactive) == (8081, "/news", True)
    assert (environment.metrics_port, environment.metrics_host) == (9100, "0.0.0.0")
    # The detail (each feed's errors, /metrics) is for this host only unless asked otherwise.
    assert (environment_from({}, in_tmp_path).metrics_host, Environment().metrics_port) == ("127.0.0.1", 9464)

    assert environment.slack_token == "xoxb-secret"
    assert environment.slack_api_url == "http://localhost:8080/api/"
    assert environment.rules_path == in_tmp_path / "conf" / "rules.yaml"
    assert environment.db_path == Path("/var/lib/feedwatch/state.json")


@pytest.mark.parametrize("value", ["", "   "])
def test_blank_variables_count_as_absent(in_tmp_path: Path, value: str) -> None:
    environment = environment_from(
        {"SLACK_BOT_TOKEN": value, "SLACK_API_URL": value, "BOT_RULES": value, "BOT_DB": value}, in_tmp_path
    )
    assert environment == environment_from({}, in_tmp_path)


def test_secrets_never_appear_in_repr(in_tmp_path: Path) -> None:
    environment = environment_from(
        {
            "SLACK_BOT_TOKEN": "xoxb-secret",
            "SLACK_SIGNING_SECRET": "sign-s3cret",
            "SLACK_APP_TOKEN": "xapp-s3",
        },
        in_tmp_path,
    )
    for secret in ("xoxb-secret", "sign-s3cret", "xapp-s3"):
        assert secret not in repr(environment) and secret not in str(environment)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("PORT", "http", "PORT: expected a port number (0-65535), got 'http'"),
        ("PORT", "70000", "PORT: expected a port number (0-65535), got '70000'"),
        ("METRICS_PORT", "metrics", "METRICS_PORT: expected a port number (0-65535), got 'metrics'"),
        ("BOT_COMMAND", "feeds", "BOT_COMMAND: expected a slash command like /feeds, got 'feeds'"),
    ],
)
def test_bad_port_or_command_is_one_line(in_tmp_path: Path, name: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        environment_from({name: value}, in_tmp_path)
    assert raised.value.problems == (problem,)


def test_interactive_needs_a_bot_token_and_a_way_to_hear_slack(in_tmp_path: Path) -> None:
    assert not environment_from({"SLACK_SIGNING_SECRET": "s"}, in_tmp_path).interactive
    assert not environment_from({"SLACK_BOT_TOKEN": "xoxb-1"}, in_tmp_path).interactive
    assert environment_from(
        {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}, in_tmp_path
    ).interactive


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("ftp://slack.example/api/", "one with scheme 'ftp'"),
        ("slack.com/api", "a value without a scheme"),
        ("xoxb-secret-token", "a value without a scheme"),
        ("https:///api/", "one without a host"),
    ],
)
def test_bad_slack_api_url_names_the_variable_but_not_the_value(
    in_tmp_path: Path, value: str, found: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        environment_from({"SLACK_API_URL": value, "SLACK_BOT_TOKEN": "xoxb-secret"}, in_tmp_path)

    assert raised.value.problems == (
        f"SLACK_API_URL: expected an http(s) URL like https://slack.com/api/, got {found}",
    )
    assert "xoxb" not in str(raised.value)


# ---------------------------------------------------------------------------------------------------------
# On-call options


def test_on_call_options_are_read_as_written() -> None:
    rules = load(
        "settings:\n  max_alerts_per_cycle: 3\n"
        + FEEDS
        + """\
channels:
  - channel: "#policy-oncall"
    keywords: ["export controls", "entity list"]
    mention: "@policy-oncall"
    priority: high
    escalate: {after: 30m, to: "@policy-leads", repeat: 2}
    quiet_hours: {from: 22:00, to: "07:00", tz: Asia/Hong_Kong}
    digest: {at: "09:00", tz: Europe/Amsterdam}
  - channel: C0123ABCD
    keywords: [chip]
"""
    )
    assert rules.settings.max_alerts_per_cycle == 3
    policy, plain = (rule.oncall for rule in rules.channels)
    assert policy == OnCall(
        mention="@policy-oncall",
        priority="high",
        ack=True,  # high priority pages: acknowledged by default
        escalate=Escalation(after_seconds=1800, to="@policy-leads", repeat=2),
        quiet_hours=DailyWindow(time(22, 0), time(7, 0), "Asia/Hong_Kong"),  # unquoted 22:00 works too
        digest=DailyTime(time(9, 0), "Europe/Amsterdam"),
    )
    assert plain == OnCall()


def test_escalation_implies_an_acknowledge_button() -> None:
    rules = load(
        FEEDS + "channels:\n  - channel: C1\n    keywords: [x]\n    escalate: {after: 5m, to: '@here'}\n"
    )
    assert rules.channels[0].oncall.ack and rules.channels[0].oncall.priority == "normal"


ONCALL = FEEDS + "channels:\n  - channel: C1\n    keywords: [x]\n"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("    mention: policy\n", "channels[0].mention: 'policy' is not a mention"),
        ("    priority: urgent\n", "channels[0].priority: 'urgent' is not one of high, normal, low"),
        ("    ack: yes please\n", "channels[0].ack: expected true or false, got a string"),
        (
            "    ack: false\n    escalate: {after: 5m, to: '@a'}\n",
            "channels[0].ack: must be true when escalate is set (only an ack stops it)",
        ),
        ("    escalate: {to: '@a'}\n", "channels[0].escalate.after: missing"),
        (
            "    escalate: {after: 5m, to: '@a', repeat: 0}\n",
            "channels[0].escalate.repeat: must be 1 or more",
        ),
        (
            "    quiet_hours: {from: '25:00', to: '07:00', tz: UTC}\n",
            "quiet_hours.from: expected a time like",
        ),
        ("    quiet_hours: {from: '22:00', to: '22:00', tz: UTC}\n", "quiet_hours: from and to are the same"),
        ("    digest: {at: '09:00', tz: Mars/Base}\n", "digest.tz: 'Mars/Base' is not a time zone"),
        ("    digest: {at: '09:00'}\n", "channels[0].digest.tz: missing"),
    ],
)
def test_a_bad_on_call_option_is_one_line_naming_its_field(extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(ONCALL + extra)
    [line] = raised.value.problems
    assert line.startswith("rules.yaml:") and problem in line, line


def test_max_alerts_per_cycle_must_be_positive() -> None:
    with pytest.raises(ConfigError) as raised:
        load("settings:\n  max_alerts_per_cycle: 0\n" + ONCALL)
    assert raised.value.problems == ("rules.yaml:2: settings.max_alerts_per_cycle: must be 1 or more",)


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_poll_concurrency_is_bounded(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(f"settings:\n  poll_concurrency: {value}\n" + ONCALL)
    [problem] = raised.value.problems
    assert problem.startswith("rules.yaml:2: settings.poll_concurrency: ")


def test_poll_concurrency_is_read() -> None:
    assert load("settings:\n  poll_concurrency: 16\n" + ONCALL).settings.poll_concurrency == 16
    assert load(ONCALL).settings.poll_concurrency == 8


def test_private_feeds_are_refused_unless_the_operator_allows_them() -> None:
    assert load(ONCALL).settings.allow_private_feeds is False
    assert load("settings:\n  allow_private_feeds: true\n" + ONCALL).settings.allow_private_feeds is True
    assert load("settings:\n  allow_private_feeds: false\n" + ONCALL).settings.allow_private_feeds is False


@pytest.mark.parametrize(("value", "got"), [("yes please", "a string"), ("1", "a number"), ("", "nothing")])
def test_allow_private_feeds_is_true_or_false(value: str, got: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(f"settings:\n  allow_private_feeds: {value}\n" + ONCALL)
    assert raised.value.problems == (
        f"rules.yaml:2: settings.allow_private_feeds: expected true or false, got {got}",
    )


def test_feed_failure_notice_after_is_read_and_must_be_positive() -> None:
    rules = load("settings:\n  feed_failure_notice_after: 3\n" + ONCALL)
    assert rules.settings.feed_failure_notice_after == 3
    assert load(ONCALL).settings.feed_failure_notice_after == 10
    with pytest.raises(ConfigError) as raised:
        load("settings:\n  feed_failure_notice_after: 0\n" + ONCALL)
    assert raised.value.problems == ("rules.yaml:2: settings.feed_failure_notice_after: must be 1 or more",)


# ---------------------------------------------------------------------------------------------------------
# Queries


def test_a_query_may_replace_or_join_the_keywords() -> None:
    rules = load(
        FEEDS
        + "channels:\n  - channel: C1\n    query: 'Huawei NEAR/5 chip*'\n"
        + "  - channel: C2\n    keywords: [SMIC]\n    query: '\"export control*\" NOT opinion'\n"
    )
    assert [(r.keywords, r.query) for r in rules.channels] == [
        ((), "Huawei NEAR/5 chip*"),
        (("SMIC",), '"export control*" NOT opinion'),
    ]


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("'(chip* OR semi*'", "channels[0].query: column 16: expected ')' to close the '(' at column 1"),
        (
            "'NOT opinion'",
            "channels[0].query: column 1: the query needs at least one term that is not negated",
        ),
        ("'a AND'", "channels[0].query: column 6: expected a term after AND, found the end of the query"),
    ],
)
def test_a_query_syntax_error_names_line_column_and_what_was_expected(query: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(FEEDS + f"channels:\n  - channel: C1\n    query: {query}\n")
    [line] = raised.value.problems
    assert line.startswith("rules.yaml:8: " + problem), line
