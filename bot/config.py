"""Reading configuration: the process environment and rules.yaml, validated so that every problem names its
file, line and field. This is the only module that reads the environment; the rest receive an `Environment`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bot.errors import ConfigError
from bot.limits import term_length_problem
from bot.logs import LOG_FORMATS
from bot.model import (
    PRIORITIES,
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
from bot.privacy import CHANNELS, VISIBILITIES
from bot.query import QuerySyntaxError, parse_query
from bot.rules import compile_keyword
from bot.yaml_bounds import compose_bounded

# ---------------------------------------------------------------------------------------------------------
# Durations

_DURATION = re.compile(r"([0-9]+)([smhd])")
_BARE_NUMBER = re.compile(r"[0-9]+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# A year is far beyond any sensible poll interval, and the cap keeps absurd values from overflowing the
# scheduler's timedelta arithmetic later, where the error would no longer name the rules file.
MAX_DURATION_SECONDS = 365 * 86400
_MAX_DURATION_DIGITS = 12


def parse_duration(text: str) -> int:
    """`"90s"`, `"5m"`, `"2h"`, `"1d"` -> seconds. Raises ValueError with a one-line message otherwise."""
    # Callers holding untyped YAML values may pass an int; it must still get the "needs a unit" message.
    value: object = text
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"{value} needs a unit, e.g. 300s")
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 2h or 1d")
    stripped = text.strip()
    if _BARE_NUMBER.fullmatch(stripped):
        raise ValueError(f"'{stripped}' needs a unit, e.g. 300s")
    match = _DURATION.fullmatch(stripped)
    if match is None:
        raise ValueError(f"'{text}' is not a duration like 30s, 5m, 2h or 1d")
    digits, unit = match.groups()
    # Checked before int() because Python refuses to convert strings of thousands of digits.
    if len(digits.lstrip("0")) > _MAX_DURATION_DIGITS:
        raise ValueError(f"'{stripped}' is too long; the maximum is 365d")
    seconds = int(digits) * _UNIT_SECONDS[unit]
    if seconds < 1:
        raise ValueError(f"'{stripped}' is too short; the minimum is 1s")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"'{stripped}' is too long; the maximum is 365d")
    return seconds


# ---------------------------------------------------------------------------------------------------------
# rules.yaml

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP = (
    _TAG + name for name in ("str", "int", "float", "bool", "null", "timestamp")
)
_SCALAR_KINDS = {
    _STR: "a string",
    _INT: "a number",
    _FLOAT: "a number",
    _BOOL: "a boolean",
    _NULL: "nothing",
    _TIMESTAMP: "a date",
}

_TOP_KEYS = ("settings", "feeds", "channels")
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_SETTINGS_KEYS = (
    "interval",
    "backfill",
    "retention",
    "admins",
    "max_alerts_per_cycle",
    "poll_concurrency",
    "allow_private_feeds",
    "feed_failure_notice_after",
)
MAX_POLL_CONCURRENCY = 64
_FEED_KEYS = ("id", "url", "interval", "visibility")
_CHANNEL_KEYS = (
    "channel",
    "feeds",
    "keywords",
    "query",
    "exclude",
    "mention",
    "priority",
    "ack",
    "escalate",
    "quiet_hours",
    "digest",
)
_ESCALATE_KEYS = ("after", "to", "repeat")
_WINDOW_KEYS = ("from", "to", "tz")
_DIGEST_KEYS = ("at", "tz")
# "@policy-oncall" (a user group handle), "<!subteam^S0123>", "<@U0123>", "@here", "@channel".
_MENTION = re.compile(
    r"@[a-z0-9][a-z0-9._-]*|<!subteam\^[A-Z0-9]+(\|[^>]*)?>|<@[UW][A-Z0-9]+>|<!(here|channel)>"
)
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")

_FEED_ID = re.compile(r"[A-Za-z0-9_.-]+")
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]+")
_CHANNEL_NAME_PUNCTUATION = frozenset("-_.")
_MAX_CHANNEL_NAME = 80
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# People paste phrases from documents and chat, so curly quotes arrive as often as straight ones.
_QUOTE_PAIRS = (('"', '"'), ("\u201c", "\u201d"))


def is_feed_id(text: str) -> bool:
    """Letters, digits, '.', '_' and '-': what rules.yaml accepts as a feed id."""
    return _FEED_ID.fullmatch(text) is not None


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules file. Raises ConfigError listing every problem found, one line each."""
    label = str(path)
    try:
        # utf-8-sig: editors on Windows like to prepend a byte-order mark.
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{label}: cannot read rules file: not UTF-8 text (bad byte at offset {exc.start})"]
        ) from exc
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{label}: cannot read rules file: {reason}"]) from exc

    root = _compose(text, label)
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL):
        raise ConfigError([f"{label}:1: the file is empty; expected settings, feeds and channels"])

    reader = _RulesReader(label, Path(os.path.abspath(Path(path).parent)), text)
    rules = reader.read(root)
    if reader.problems or rules is None:
        raise ConfigError(reader.sorted_problems())
    return rules


def _compose(text: str, label: str) -> Node | None:
    """The YAML node tree, which unlike loaded values remembers the line of every value."""
    try:
        # Composing never constructs Python objects, so no tag in the file can run code; aliases are
        # bounded there, before anything walks them.
        node: Node | None = compose_bounded(text, label)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and problem.startswith("but "):
            # PyYAML splits some messages in two ("expected a single document", "but found another").
            problem = f"{exc.context}, {problem}"
        if mark is None:
            raise ConfigError([f"{label}: YAML syntax error: {problem}"]) from exc
        raise ConfigError(
            [f"{label}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: {problem}"]
        ) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        problem = f"character #x{exc.character:04x} is not allowed"
        raise ConfigError([f"{label}:{line}:{column}: YAML syntax error: {problem}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{label}: YAML syntax error: {exc}"]) from exc
    except RecursionError as exc:
        raise ConfigError([f"{label}: YAML syntax error: nested too deeply"]) from exc
    return node


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _is_string(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _STR


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    shown_tag = node.tag.replace(_TAG, "!!", 1) if node.tag.startswith(_TAG) else node.tag
    return _SCALAR_KINDS.get(node.tag, f"a value tagged {shown_tag}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unquote(word: str) -> str:
    for opening, closing in _QUOTE_PAIRS:
        if len(word) >= 2 and word.startswith(opening) and word.endswith(closing):
            return word[1:-1].strip()
    return word


def _one_line(text: str) -> str:
    # Messages quote values from the file, and a quoted YAML string may hold a line break or a tab.
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode() for char in text)


def _is_channel_name(name: str) -> bool:
    # Slack channel names may use non-Latin letters, but never upper case.
    return 0 < len(name) <= _MAX_CHANNEL_NAME and all(
        (char.isalnum() and char == char.lower()) or char in _CHANNEL_NAME_PUNCTUATION for char in name
    )


class _RulesReader:
    """Walks the node tree once, collecting every problem rather than stopping at the first."""

    def __init__(self, file: str, rules_dir: Path, source: str) -> None:
        self.file = file
        self.source_lines = source.splitlines() or [""]
        self.rules_dir = rules_dir
        self.problems: list[tuple[int, str]] = []
        self.feed_id_lines: dict[str, int] = {}
        # Every id written under feeds, valid or not, so a bad feed entry is reported once and not again
        # by each channel that names it.
        self.feed_ids_written: set[str] = set()
        self.feeds_readable = False

    def problem(self, node: Node, path: str, message: str) -> None:
        line = _line(node)
        prefix = f"{self.file}:{line}: {path}: " if path else f"{self.file}:{line}: "
        self.problems.append((line, _one_line(prefix + message)))

    def rest_of_line(self, node: Node) -> str:
        line, column = node.start_mark.line, node.start_mark.column
        return self.source_lines[line][column:].strip() if line < len(self.source_lines) else ""

    def sorted_problems(self) -> list[str]:
        return [text for _, text in sorted(self.problems, key=lambda problem: problem[0])]

    def wrong_type(self, node: Node, path: str, expected: str, hint: str = "") -> None:
        self.problem(node, path, f"expected {expected}, got {_describe(node)}{hint}")

    def missing(self, parent: Node, path: str, expected: str) -> None:
        self.problem(parent, path, f"missing; expected {expected}")

    # -- generic shapes ----------------------------------------------------------------------------------

    def fields(self, node: Node, path: str, allowed: Sequence[str], expected: str) -> dict[str, Node] | None:
        """The values of a mapping by key, after reporting unknown, duplicate and non-word keys."""
        if not isinstance(node, MappingNode):
            self.wrong_type(node, path, expected)
            return None
        found: dict[str, Node] = {}
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problem(key_node, path, f"keys must be words, got {_describe(key_node)}")
                continue
            # The text as written, so `yes:` or `1:` read as keys rather than as a boolean or a number.
            key = str(key_node.value)
            key_path = _join(path, key)
            if key not in allowed:
                self.problem(key_node, key_path, f"unknown key (expected one of: {', '.join(allowed)})")
            elif key in first_lines:
                # PyYAML would silently keep the last value; the author almost certainly meant one of them.
                self.problem(key_node, key_path, f"duplicate key (first at line {first_lines[key]})")
            else:
                first_lines[key] = _line(key_node)
                found[key] = value_node
        return found

    def entries(self, fields: Mapping[str, Node], parent: Node, key: str) -> list[Node] | None:
        """The entries of a required top-level list such as `feeds`."""
        node = fields.get(key)
        if node is None:
            self.missing(parent, key, f"a non-empty list of {key}")
            return None
        if _is_null(node) or (isinstance(node, SequenceNode) and not node.value):
            self.problem(node, key, f"must not be empty; list at least one entry under {key}")
            return None
        if not isinstance(node, SequenceNode):
            self.wrong_type(node, key, f"a list of {key}")
            return None
        return list(node.value)

    def string(self, node: Node, path: str, expected: str = "a string") -> str | None:
        if _is_string(node):
            return str(node.value)
        hint = ""
        if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT, _BOOL, _TIMESTAMP):
            hint = f'; put it in quotes: "{node.value}"'
        self.wrong_type(node, path, expected, hint)
        return None

    def words(self, node: Node | None, path: str, expected: str, *, required: bool) -> tuple[str, ...]:
        """A list of keywords: stripped, unquoted, de-duplicated, each with at least one letter or digit."""
        if node is None or _is_null(node) or (isinstance(node, SequenceNode) and not node.value):
            if node is not None and required:
                self.problem(node, path, "must not be empty")
            return ()
        if not isinstance(node, SequenceNode):
            hint = f" (write [{node.value}] for just one)" if _is_string(node) else ""
            self.wrong_type(node, path, f"a list of {expected}", hint)
            return ()
        words: list[str] = []
        for index, item in enumerate(node.value):
            item_path = f"{path}[{index}]"
            text = self.string(item, item_path)
            if text is None:
                continue
            word = _unquote(text.strip())
            if not word:
                self.problem(item, item_path, "must not be empty")
                continue
            too_long = term_length_problem(word)
            if too_long:
                self.problem(item, item_path, too_long)
                continue
            # The matcher's own compiler is the judge, so check and run can never disagree. ("*" or "!!"
            # would match everything or nothing; either way not what anyone meant.)
            try:
                compile_keyword(word)
            except ValueError as e:
                self.problem(item, item_path, str(e))
                continue
            if word not in words:
                words.append(word)
        return tuple(words)

    def duration(self, node: Node, path: str) -> int | None:
        if not isinstance(node, ScalarNode) or _is_null(node):
            self.wrong_type(node, path, "a duration like 30s, 5m, 2h or 1d")
            return None
        # A bare YAML number still goes through parse_duration, which explains that it needs a unit.
        try:
            return parse_duration(str(node.value))
        except ValueError as exc:
            self.problem(node, path, str(exc))
            return None

    def count(self, node: Node, path: str) -> int | None:
        # YAML booleans are not numbers here, even though Python would happily treat True as 1.
        if not (isinstance(node, ScalarNode) and node.tag == _INT):
            self.wrong_type(node, path, "a whole number")
            return None
        try:
            value = SafeConstructor().construct_yaml_int(node)
        except ValueError:
            self.problem(node, path, f"'{node.value}' is too large")
            return None
        if not isinstance(value, int) or value < 0:
            self.problem(node, path, f"must be 0 or more, got {node.value}")
            return None
        return value

    def positive_count(self, node: Node, path: str, maximum: int | None = None) -> int | None:
        """A count of 1 or more (and at most `maximum`); None, with the problem noted, otherwise."""
        value = self.count(node, path)
        if value is not None and (value == 0 or (maximum is not None and value > maximum)):
            self.problem(
                node, path, "must be 1 or more" if maximum is None else f"must be from 1 to {maximum}"
            )
            return None
        return value

    # -- sections ----------------------------------------------------------------------------------------

    def read(self, root: Node) -> RuleSet | None:
        top = self.fields(root, "", _TOP_KEYS, "a mapping with settings, feeds and channels")
        if top is None:
            return None
        settings = self.settings(top.get("settings"))
        feeds = self.feeds(top, root, settings)
        channels = self.channels(top, root)
        if feeds is None or channels is None or self.problems:
            return None
        return RuleSet(settings=settings, feeds=tuple(feeds), channels=tuple(channels), path=self.file)

    def settings(self, node: Node | None) -> Settings:
        if node is None or _is_null(node):
            return Settings()
        fields = self.fields(node, "settings", _SETTINGS_KEYS, f"a mapping of {', '.join(_SETTINGS_KEYS)}")
        if fields is None:
            return Settings()
        defaults = Settings()
        interval = defaults.interval_seconds
        backfill = defaults.backfill
        retention = defaults.retention_seconds
        admins: tuple[str, ...] = ()
        if "interval" in fields:
            interval = self.duration(fields["interval"], "settings.interval") or interval
        if "backfill" in fields:
            parsed_backfill = self.count(fields["backfill"], "settings.backfill")
            backfill = backfill if parsed_backfill is None else parsed_backfill
        if "retention" in fields:
            retention = self.duration(fields["retention"], "settings.retention") or retention
        if "admins" in fields:
            admins = self.user_ids(fields["admins"], "settings.admins")
        max_alerts = defaults.max_alerts_per_cycle
        if "max_alerts_per_cycle" in fields:
            node = fields["max_alerts_per_cycle"]
            max_alerts = self.positive_count(node, "settings.max_alerts_per_cycle") or max_alerts
        concurrency = defaults.poll_concurrency
        if "poll_concurrency" in fields:
            node = fields["poll_concurrency"]
            concurrency = (
                self.positive_count(node, "settings.poll_concurrency", MAX_POLL_CONCURRENCY) or concurrency
            )
        allow_private = defaults.allow_private_feeds
        if "allow_private_feeds" in fields:
            parsed_allow = self.boolean(fields["allow_private_feeds"], "settings.allow_private_feeds")
            allow_private = allow_private if parsed_allow is None else parsed_allow
        notice_after = defaults.feed_failure_notice_after
        if "feed_failure_notice_after" in fields:
            node = fields["feed_failure_notice_after"]
            notice_after = self.positive_count(node, "settings.feed_failure_notice_after") or notice_after
        return Settings(
            interval_seconds=interval,
            backfill=backfill,
            retention_seconds=retention,
            admins=admins,
            max_alerts_per_cycle=max_alerts,
            poll_concurrency=concurrency,
            allow_private_feeds=allow_private,
            feed_failure_notice_after=notice_after,
        )

    def boolean(self, node: Node, path: str) -> bool | None:
        if not (isinstance(node, ScalarNode) and node.tag == _BOOL):
            self.wrong_type(node, path, "true or false")
            return None
        return bool(SafeConstructor().construct_yaml_bool(node))

    def user_ids(self, node: Node, path: str) -> tuple[str, ...]:
        if not isinstance(node, SequenceNode) or not node.value:
            self.wrong_type(node, path, "a list of Slack user IDs like U0123ABCD")
            return ()
        ids: list[str] = []
        for index, item in enumerate(node.value):
            text = self.string(item, f"{path}[{index}]", "a Slack user ID like U0123ABCD")
            if text is None:
                continue
            user = text.strip()
            if not _USER_ID.fullmatch(user):
                self.problem(
                    item,
                    f"{path}[{index}]",
                    f"'{user}' is not a user ID (like U0123ABCD; in Slack: profile → ⋮ → Copy member ID)",
                )
            elif user not in ids:
                ids.append(user)
        return tuple(ids)

    def feeds(self, top: Mapping[str, Node], root: Node, settings: Settings) -> list[FeedConfig] | None:
        entries = self.entries(top, root, "feeds")
        if entries is None:
            return None
        self.feeds_readable = True
        feeds = [self.feed(entry, f"feeds[{index}]", settings) for index, entry in enumerate(entries)]
        return [feed for feed in feeds if feed is not None]

    def feed(self, entry: Node, path: str, settings: Settings) -> FeedConfig | None:
        fields = self.fields(entry, path, _FEED_KEYS, "a mapping with id, url and optionally interval")
        if fields is None:
            return None
        feed_id = self.feed_id(fields, entry, path)
        url = self.feed_url(fields, entry, path)
        interval: int | None = settings.interval_seconds
        if "interval" in fields:
            interval = self.duration(fields["interval"], f"{path}.interval")
        visibility: str | None = CHANNELS  # the safe default: only its channels' members read it
        if "visibility" in fields:
            visibility = self.choice(fields["visibility"], f"{path}.visibility", VISIBILITIES)
        if feed_id is None or url is None or interval is None or visibility is None:
            return None
        return FeedConfig(
            id=feed_id,
            url=url,
            interval_seconds=interval,
            location=Location(self.file, _line(entry)),
            visibility=visibility,
        )

    def choice(self, node: Node, path: str, allowed: Sequence[str]) -> str | None:
        expected = " or ".join(allowed)
        text = self.string(node, path, expected)
        if text is not None and text not in allowed:
            self.problem(node, path, f"'{text}' is not one of: {expected}")
            return None
        return text

    def feed_id(self, fields: Mapping[str, Node], entry: Node, path: str) -> str | None:
        id_path = f"{path}.id"
        node = fields.get("id")
        if node is None:
            self.missing(entry, id_path, "a short name such as scmp-semiconductors")
            return None
        feed_id = self.string(node, id_path)
        if feed_id is None:
            return None
        self.feed_ids_written.add(feed_id)
        if not feed_id:
            self.problem(node, id_path, "must not be empty")
            return None
        if not _FEED_ID.fullmatch(feed_id):
            self.problem(node, id_path, f"'{feed_id}' may only contain letters, digits, '.', '_' and '-'")
            return None
        if feed_id in self.feed_id_lines:
            first = self.feed_id_lines[feed_id]
            self.problem(node, id_path, f"duplicate feed id '{feed_id}' (first at line {first})")
            return None
        self.feed_id_lines[feed_id] = _line(node)
        return feed_id

    def feed_url(self, fields: Mapping[str, Node], entry: Node, path: str) -> str | None:
        url_path = f"{path}.url"
        node = fields.get("url")
        if node is None:
            self.missing(entry, url_path, "an http(s) URL or a file path")
            return None
        text = self.string(node, url_path, "an http(s) URL or a file path")
        if text is None:
            return None
        url = text.strip()
        if not url:
            self.problem(node, url_path, "must not be empty")
            return None
        scheme_match = _URL_SCHEME.match(url)
        if scheme_match is None:
            return os.path.normpath(os.path.join(self.rules_dir, url))
        scheme = scheme_match.group(1).lower()
        if scheme in ("http", "https"):
            return self.web_url(url, node, url_path)
        if scheme == "file":
            return self.file_url(url, node, url_path)
        self.problem(
            node, url_path, f"unsupported URL scheme '{scheme}' (use http, https, file or a file path)"
        )
        return None

    def web_url(self, url: str, node: Node, path: str) -> str | None:
        if any(char.isspace() for char in url):
            self.problem(node, path, f"'{url}' contains spaces; write them as %20")
            return None
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - urlsplit only validates the port when it is read
        except ValueError as exc:
            self.problem(node, path, f"'{url}' is not a valid URL: {exc}")
            return None
        if not parts.hostname:
            self.problem(node, path, f"'{url}' has no host name")
            return None
        return url

    def file_url(self, url: str, node: Node, path: str) -> str | None:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            # file://feeds/x.xml reads as host "feeds"; the author nearly always meant a relative path.
            self.problem(
                node,
                path,
                f"'{url}' names the host '{parts.netloc}'; write file:///absolute/path or file:relative/path",
            )
            return None
        if not parts.path:
            self.problem(node, path, f"'{url}' has no path")
            return None
        if parts.path.startswith("/"):
            return url
        resolved = os.path.normpath(os.path.join(self.rules_dir, unquote(parts.path)))
        return Path(resolved).as_uri()

    def channels(self, top: Mapping[str, Node], root: Node) -> list[ChannelRule] | None:
        entries = self.entries(top, root, "channels")
        if entries is None:
            return None
        rules = [self.channel_rule(entry, f"channels[{index}]") for index, entry in enumerate(entries)]
        return [rule for rule in rules if rule is not None]

    def channel_rule(self, entry: Node, path: str) -> ChannelRule | None:
        problems_before = len(self.problems)
        fields = self.fields(entry, path, _CHANNEL_KEYS, "a mapping with channel, keywords and options")
        if fields is None:
            return None
        channel = self.channel(fields, entry, path)
        feed_ids = self.channel_feeds(fields.get("feeds"), f"{path}.feeds")
        if "keywords" not in fields and "query" not in fields:
            self.missing(entry, f"{path}.keywords", "a non-empty list of keywords (or a query)")
        keywords = self.words(
            fields.get("keywords"), f"{path}.keywords", "keywords", required="query" not in fields
        )
        query = self.query(fields["query"], f"{path}.query") if "query" in fields else None
        exclude = self.words(fields.get("exclude"), f"{path}.exclude", "words to exclude", required=False)
        oncall = self.oncall(fields, entry, path)
        if channel is None or oncall is None or len(self.problems) > problems_before:
            return None
        return ChannelRule(
            channel=channel,
            keywords=keywords,
            exclude=exclude,
            feeds=feed_ids,
            location=Location(self.file, _line(entry)),
            oncall=oncall,
            query=query,
        )

    def query(self, node: Node, path: str) -> str | None:
        text = self.string(node, path, "a query like 'Huawei NEAR/5 chip*'")
        if text is None:
            return None
        try:
            parse_query(text)
        except QuerySyntaxError as e:
            self.problem(node, path, f"{e} (in: {_one_line(text)[:80]})")
            return None
        return text

    # -- on-call options -----------------------------------------------------------------------------

    def oncall(self, fields: Mapping[str, Node], entry: Node, path: str) -> OnCall | None:
        problems_before = len(self.problems)
        mention = self.mention(fields["mention"], f"{path}.mention") if "mention" in fields else None
        priority = "normal"
        if "priority" in fields:
            text = self.string(fields["priority"], f"{path}.priority", "high, normal or low")
            if text is not None and text not in PRIORITIES:
                self.problem(
                    fields["priority"], f"{path}.priority", f"'{text}' is not one of high, normal, low"
                )
            elif text is not None:
                priority = text
        escalate = self.escalation(fields["escalate"], f"{path}.escalate") if "escalate" in fields else None
        # An alert that escalates must be acknowledgeable, or it would always escalate; high priority pages.
        ack = priority == "high" or "escalate" in fields
        if "ack" in fields:
            node = fields["ack"]
            parsed_ack = self.boolean(node, f"{path}.ack")
            if parsed_ack is not None:
                ack = parsed_ack
                if not ack and "escalate" in fields:
                    self.problem(
                        node, f"{path}.ack", "must be true when escalate is set (only an ack stops it)"
                    )
        quiet = self.window(fields["quiet_hours"], f"{path}.quiet_hours") if "quiet_hours" in fields else None
        digest = self.daily_time(fields["digest"], f"{path}.digest") if "digest" in fields else None
        if len(self.problems) > problems_before:
            return None
        return OnCall(
            mention=mention, priority=priority, ack=ack, escalate=escalate, quiet_hours=quiet, digest=digest
        )

    def mention(self, node: Node, path: str) -> str | None:
        text = self.string(node, path, 'a mention like "@policy-oncall"')
        if text is None:
            return None
        mention = text.strip()
        if not _MENTION.fullmatch(mention):
            self.problem(
                node,
                path,
                f"'{mention}' is not a mention: use a user group handle like \"@policy-oncall\", "
                "<!subteam^ID>, <@U…>, @here or @channel",
            )
            return None
        return mention

    def escalation(self, node: Node, path: str) -> Escalation | None:
        fields = self.fields(node, path, _ESCALATE_KEYS, "a mapping with after, to and optionally repeat")
        if fields is None:
            return None
        if "after" not in fields:
            self.missing(node, f"{path}.after", "a duration like 30m")
        if "to" not in fields:
            self.missing(node, f"{path}.to", 'a mention like "@policy-leads"')
        after = self.duration(fields["after"], f"{path}.after") if "after" in fields else None
        to = self.mention(fields["to"], f"{path}.to") if "to" in fields else None
        repeat = 1
        if "repeat" in fields:
            parsed = self.count(fields["repeat"], f"{path}.repeat")
            if parsed == 0:
                self.problem(fields["repeat"], f"{path}.repeat", "must be 1 or more")
            elif parsed is not None:
                repeat = parsed
        if after is None or to is None:
            return None
        return Escalation(after_seconds=after, to=to, repeat=repeat)

    def window(self, node: Node, path: str) -> DailyWindow | None:
        fields = self.fields(node, path, _WINDOW_KEYS, "a mapping with from, to and tz")
        if fields is None:
            return None
        for key, expected in (
            ("from", 'a time like "22:00"'),
            ("to", 'a time like "07:00"'),
            ("tz", "a time zone"),
        ):
            if key not in fields:
                self.missing(node, f"{path}.{key}", expected)
        start = self.clock(fields["from"], f"{path}.from") if "from" in fields else None
        end = self.clock(fields["to"], f"{path}.to") if "to" in fields else None
        tz = self.zone(fields["tz"], f"{path}.tz") if "tz" in fields else None
        if start is None or end is None or tz is None:
            return None
        if start == end:
            self.problem(node, path, "from and to are the same time: quiet hours would never end")
            return None
        return DailyWindow(start, end, tz)

    def daily_time(self, node: Node, path: str) -> DailyTime | None:
        fields = self.fields(node, path, _DIGEST_KEYS, "a mapping with at and tz")
        if fields is None:
            return None
        for key, expected in (("at", 'a time like "09:00"'), ("tz", "a time zone")):
            if key not in fields:
                self.missing(node, f"{path}.{key}", expected)
        at = self.clock(fields["at"], f"{path}.at") if "at" in fields else None
        tz = self.zone(fields["tz"], f"{path}.tz") if "tz" in fields else None
        if at is None or tz is None:
            return None
        return DailyTime(at, tz)

    def clock(self, node: Node, path: str) -> time | None:
        # Unquoted 22:00 is a YAML 1.1 sexagesimal number: read what was written, whatever the tag.
        text = str(node.value).strip() if isinstance(node, ScalarNode) else ""
        match = _CLOCK.fullmatch(text)
        if match is None:
            self.problem(
                node,
                path,
                f"expected a time like \"22:00\", got '{text}'" if text else 'expected a time like "22:00"',
            )
            return None
        return time(int(match.group(1)), int(match.group(2)))

    def zone(self, node: Node, path: str) -> str | None:
        text = self.string(node, path, "a time zone like Europe/Amsterdam")
        if text is None:
            return None
        try:
            ZoneInfo(text.strip())
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(node, path, f"'{text}' is not a time zone (like Europe/Amsterdam or Asia/Hong_Kong)")
            return None
        return text.strip()

    def channel(self, fields: Mapping[str, Node], entry: Node, path: str) -> str | None:
        channel_path = f"{path}.channel"
        expected = "a channel ID like C0123ABCD or a #name"
        node = fields.get("channel")
        if node is None:
            self.missing(entry, channel_path, expected)
            return None
        if _is_null(node):
            # `channel: #alerts` is a YAML comment, so the value silently vanishes; show the fix.
            comment = self.rest_of_line(node)
            name = comment.split()[0] if comment.startswith("#") else "#alerts"
            hint = f' (a #name must be in quotes: "{name}")'
            self.wrong_type(node, channel_path, expected, hint)
            return None
        text = self.string(node, channel_path, expected)
        if text is None:
            return None
        channel = text.strip()
        if _CHANNEL_ID.fullmatch(channel):
            return channel
        if channel.startswith("#"):
            if _is_channel_name(channel[1:]):
                return channel
            if _CHANNEL_ID.fullmatch(channel[1:]):
                message = f"'{channel}': a channel ID is written without '#'"
            else:
                message = (
                    f"'{channel}' is not a valid channel name: use lowercase letters, digits, "
                    f"'-', '_' and '.', at most {_MAX_CHANNEL_NAME} characters"
                )
            self.problem(node, channel_path, message)
            return None
        hint = f" (did you mean '#{channel}'?)" if _is_channel_name(channel) else ""
        self.problem(node, channel_path, f"'{channel}' is not {expected}{hint}")
        return None

    def channel_feeds(self, node: Node | None, path: str) -> tuple[str, ...] | None:
        """The feed ids a channel listens to; None means every feed."""
        if node is None:
            return None
        leave_out = "leave out 'feeds' to use every feed"
        if _is_null(node) or (isinstance(node, SequenceNode) and not node.value):
            self.problem(node, path, f"must not be empty ({leave_out})")
            return None
        if not isinstance(node, SequenceNode):
            hint = f" (write [{node.value}] for just one)" if _is_string(node) else ""
            self.wrong_type(node, path, "a list of feed ids", hint)
            return None
        feed_ids: list[str] = []
        for index, item in enumerate(node.value):
            item_path = f"{path}[{index}]"
            feed_id = self.string(item, item_path, "a feed id")
            if feed_id is None or feed_id in feed_ids:
                continue
            if feed_id in self.feed_id_lines:
                feed_ids.append(feed_id)
            # A broken feed entry, or a feeds section that could not be read, has been reported already.
            elif self.feeds_readable and feed_id not in self.feed_ids_written:
                known = ", ".join(self.feed_id_lines) or "none are valid"
                self.problem(item, item_path, f"unknown feed '{feed_id}' (feeds are: {known})")
        return tuple(feed_ids)


# ---------------------------------------------------------------------------------------------------------
# Environment

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_RULES_PATH = "rules.yaml"
DEFAULT_DB_PATH = "data/state.json"
DEFAULT_PORT = 3000
# The detail listener (/healthz with each feed's errors, /metrics): not the public PORT. 9464 is the port
# Prometheus exporters commonly take that nothing else on a host tends to (9090 is Prometheus itself).
DEFAULT_METRICS_PORT = 9464
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_COMMAND = "/feeds"


@dataclass(frozen=True)
class Environment:
    """Everything the bot takes from the process environment, with paths already absolute."""

    slack_token: str | None = field(default=None, repr=False)
    slack_api_url: str = DEFAULT_SLACK_API_URL
    rules_path: Path = Path(DEFAULT_RULES_PATH)
    db_path: Path = Path(DEFAULT_DB_PATH)
    log_level: str = "INFO"
    log_format: str = "text"  # or json: one JSON object per line
    signing_secret: str | None = field(default=None, repr=False)  # HTTP mode: verifies Slack's requests
    app_token: str | None = field(default=None, repr=False)  # Socket Mode (xapp-...)
    port: int = DEFAULT_PORT
    command: str = DEFAULT_COMMAND
    metrics_port: int = DEFAULT_METRICS_PORT  # the full /healthz and /metrics, apart from the public PORT
    metrics_host: str = DEFAULT_METRICS_HOST  # loopback: only this host (or its pod) reads the detail

    @property
    def interactive(self) -> bool:
        """Serves slash commands, buttons and App Home (needs a bot token and a way to hear Slack)."""
        return bool(self.slack_token and (self.signing_secret or self.app_token))


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def environment_from(environ: Mapping[str, str], cwd: Path) -> Environment:
    """Build an Environment from SLACK_BOT_TOKEN, SLACK_API_URL, SLACK_SIGNING_SECRET, SLACK_APP_TOKEN,
    PORT, METRICS_PORT, METRICS_HOST, BOT_COMMAND, BOT_RULES, BOT_DB, BOT_LOG_LEVEL and BOT_LOG_FORMAT;
    relative paths resolve against `cwd`. Empty or blank values count as unset."""

    def setting(name: str) -> str | None:
        value = environ.get(name, "").strip()
        return value or None

    api_url = setting("SLACK_API_URL") or DEFAULT_SLACK_API_URL
    parts = urlsplit(api_url) if _URL_SCHEME.match(api_url) else None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        # The value itself is left out: a token pasted into the wrong variable must not reach the logs.
        found = f"one with scheme '{parts.scheme}'" if parts and parts.scheme else "a value without a scheme"
        if parts is not None and parts.scheme.lower() in ("http", "https"):
            found = "one without a host"
        raise ConfigError(
            [f"SLACK_API_URL: expected an http(s) URL like {DEFAULT_SLACK_API_URL}, got {found}"]
        )
    if not api_url.endswith("/"):
        api_url += "/"
    log_level = (setting("BOT_LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError([f"BOT_LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}"])
    log_format = (setting("BOT_LOG_FORMAT") or "text").lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError([f"BOT_LOG_FORMAT: expected one of {', '.join(LOG_FORMATS)}, got {log_format!r}"])

    port_text = setting("PORT") or str(DEFAULT_PORT)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError([f"PORT: expected a port number (0-65535), got {port_text!r}"])
    metrics_port_text = setting("METRICS_PORT") or str(DEFAULT_METRICS_PORT)
    if not metrics_port_text.isdigit() or not 0 <= int(metrics_port_text) <= 65535:
        raise ConfigError([f"METRICS_PORT: expected a port number (0-65535), got {metrics_port_text!r}"])
    command = setting("BOT_COMMAND") or DEFAULT_COMMAND
    if not re.fullmatch(r"/[a-z0-9_-]{1,31}", command):
        raise ConfigError([f"BOT_COMMAND: expected a slash command like /feeds, got {command!r}"])

    return Environment(
        slack_token=setting("SLACK_BOT_TOKEN"),
        signing_secret=setting("SLACK_SIGNING_SECRET"),
        app_token=setting("SLACK_APP_TOKEN"),
        port=int(port_text),
        metrics_port=int(metrics_port_text),
        metrics_host=setting("METRICS_HOST") or DEFAULT_METRICS_HOST,
        command=command,
        slack_api_url=api_url,
        rules_path=cwd / (setting("BOT_RULES") or DEFAULT_RULES_PATH),
        db_path=cwd / (setting("BOT_DB") or DEFAULT_DB_PATH),
        log_level=log_level,
        log_format=log_format,
    )


def load_environment() -> Environment:
    """The real process environment; the one place the bot reads os.environ."""
    return environment_from(os.environ, Path.cwd())
