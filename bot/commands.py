"""The slash command, pure: text -> Command, and the answers that need only data (search, latest, test,
list, export, help). Applying a command to state is bot.service's job; talking to Slack is bot.slackapp's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import yaml

from bot import richtext as rich
from bot.addresses import RefusedURL, check_feed_url
from bot.blocks import clean_text, escape_mrkdwn, highlight, slack_date, trim
from bot.config import is_feed_id, parse_duration
from bot.limits import MAX_TERMS_PER_COMMAND, term_length_problem
from bot.model import AddedFeed, ChannelRule, FeedConfig, Item, OnCall, Subscription
from bot.oncall import OpenAlert, describe_age
from bot.query import ItemText, QuerySyntaxError, evaluate, parse_query, terms_of
from bot.replies import CodeLine, Line, build_reply
from bot.replies import Reply as Reply  # re-exported: handlers import it from here
from bot.rules import RuleMatcher, compile_keyword, match_keywords
from bot.store import ArchivedItem

VERBS = (
    "subscribe",
    "unsubscribe",
    "list",
    "search",
    "latest",
    "test",
    "pause",
    "resume",
    "export",
    "oncall",
    "add-feed",
    "remove-feed",
    "help",
)
ALIASES = {"sub": "subscribe", "unsub": "unsubscribe", "ls": "list", "find": "search"}
SEARCH_LIMIT = 10
LATEST_DEFAULT, LATEST_MAX = 5, 20
SUBSCRIBE_PREVIEW = 3
SUBSCRIBE_PREVIEW_SCAN = 2000  # the newest archived items a subscribe's preview looks at
MAX_PAUSE = timedelta(days=30)
MAX_DAYS = 3650

# Slack clients turn typed quotes into curly ones; a phrase is a phrase either way.
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})
# A "double-quoted phrase" (an unclosed one runs to the end), a 'single-quoted phrase' standing on its own
# (so the apostrophe in Huawei's stays part of its word), or a word.
_TOKEN = re.compile(r"\"([^\"]*)\"?|(?<!\S)'([^']+)'(?!\S)|(\S+)")
_OPTION = re.compile(r"(?i)^(feed|days):(.*)$")
_ID_OPTION = re.compile(r"(?i)^id:(.*)$")
MAX_FEED_ID = 40
# Slack may send a link as <https://example.com/feed> or <https://example.com/feed|example.com/feed>.
_SLACK_LINK = re.compile(r"^<([^|>]*)(?:\|[^>]*)?>$")
# For logs: a URL's user name and password, and its query (where private feeds keep their tokens).
_URL_CREDENTIALS = re.compile(r"(?i)(https?://)[^/\s@<>|]*@")
_URL_QUERY = re.compile(r"(?i)(https?://[^\s?<>|]*)\?[^\s<>|]*")


class CommandError(ValueError):
    """A command that cannot be run as typed; the message is the reply."""


@dataclass(frozen=True)
class Command:
    verb: str
    terms: tuple[str, ...] = ()  # keyword terms as in rules.yaml: a phrase is one term, without its quotes
    text: str = ""  # everything after the verb, as typed (for test and pause)
    feed: str | None = None
    days: int | None = None
    unknown: str | None = None  # the verb the user typed when it is not one we know
    query: str | None = None  # `subscribe query:<query>` / `unsubscribe query:<query>`
    url: str | None = None  # `add-feed <url>`, checked by bot.addresses (`feed` is the id it asks for)


def tokens(text: str) -> list[tuple[str, bool]]:
    """Words and "quoted phrases", as (text without quotes, whether it was quoted)."""
    out = []
    for match in _TOKEN.finditer(text.translate(_QUOTES)):
        double, single, word = match.groups()
        if word is not None:
            out.append((word, False))
        else:
            phrase = double if double is not None else single
            if phrase and phrase.strip():
                out.append((" ".join(phrase.split()), True))
    return out


def parse_command(text: str) -> Command:
    """Raises CommandError with a reply-ready message for a malformed option or term."""
    stripped = text.strip()
    if not stripped:
        return Command("help")
    verb_text, _, rest = stripped.partition(" ")
    verb = ALIASES.get(verb_text.lower(), verb_text.lower())
    if verb not in VERBS:
        return Command("help", unknown=verb_text)
    rest = rest.strip()
    if verb in ("test", "pause"):
        return Command(verb, text=rest)
    if verb == "add-feed":
        return parse_add_feed(rest)
    if verb == "remove-feed":
        return parse_remove_feed(rest)
    if verb in ("subscribe", "unsubscribe") and rest[:6].lower() == "query:":
        # Everything after query: is the query (it has its own spaces, quotes and parentheses).
        query = rest[6:].translate(_QUOTES).strip()
        if verb == "subscribe":
            # Not for unsubscribe: a query stored before the limits were must stay removable.
            try:
                parse_query(query)
            except QuerySyntaxError as e:
                shown = escape_mrkdwn(shorten(query))
                raise CommandError(f"That query does not parse: {escape_mrkdwn(str(e))}.\n> `{shown}`") from e
        return Command(verb, text=rest, query=query)
    terms: list[str] = []
    feed: str | None = None
    days: int | None = None
    for token, quoted in tokens(rest):
        option = None if quoted else _OPTION.match(token)
        if option is None:
            terms.append(token)
            continue
        name, value = option.group(1).lower(), option.group(2)
        if name == "feed":
            if not value:
                raise CommandError("`feed:` needs a feed id, like `feed:scmp-semiconductors`.")
            feed = value
        else:
            if not value.isdigit() or not 1 <= int(value) <= MAX_DAYS:
                shown = escape_mrkdwn(value) or " "
                raise CommandError(f"`days:` needs a number of days, like `days:30` (got `{shown}`).")
            days = int(value)
    if verb in ("subscribe", "search") and len(terms) > MAX_TERMS_PER_COMMAND:
        raise CommandError(
            f"That is {len(terms)} terms; one {verb} takes at most {MAX_TERMS_PER_COMMAND}. "
            + ("Nothing was changed." if verb == "subscribe" else "")
        )
    for term in terms:
        if verb in ("subscribe", "search", "unsubscribe"):
            # Not for unsubscribe: a term stored before the limits were must stay removable.
            too_long = None if verb == "unsubscribe" else term_length_problem(term)
            if too_long:
                raise CommandError(f"Cannot use that term: {escape_mrkdwn(too_long)}. Nothing was changed.")
            try:
                compile_keyword(term)
            except ValueError as e:
                raise CommandError(
                    f"Cannot use {escape_mrkdwn(shorten(term))}: {escape_mrkdwn(shorten(str(e), 300))}"
                ) from e
    return Command(verb, terms=tuple(terms), text=rest, feed=feed, days=days)


def shorten(text: str, width: int = 100) -> str:
    """Text quoted back in a reply, cut: a hostile command must not make the reply as long as itself."""
    return text if len(text) <= width else text[: width - 1] + "…"


def link_target(word: str) -> str:
    """The URL itself, whether typed bare or sent by Slack as a <link|label>."""
    match = _SLACK_LINK.match(word)
    return match.group(1) if match else word


def redact_urls(text: str) -> str:
    """The text with each URL's credentials and query cut out, for logs."""
    return _URL_QUERY.sub(r"\1?…", _URL_CREDENTIALS.sub(r"\1…@", text))


def checked_feed_id(value: str) -> str:
    if not value or len(value) > MAX_FEED_ID or not is_feed_id(value):
        raise CommandError(
            f"A feed id is up to {MAX_FEED_ID} letters, digits, `.`, `_` and `-`, like `id:hacker-news` "
            f"(got `{escape_mrkdwn(trim(value, 60)) or ' '}`)."
        )
    return value


def parse_add_feed(rest: str) -> Command:
    """`add-feed <url> [id:<feed-id>]`; the URL is checked here (scheme, host, no credentials), its
    addresses when the bot connects."""
    url: str | None = None
    feed_id: str | None = None
    for word in rest.split():
        option = _ID_OPTION.match(word)
        if option is not None:
            feed_id = checked_feed_id(option.group(1))
        elif url is None:
            url = link_target(word)
        else:
            raise CommandError("`add-feed` takes one URL, and optionally `id:name`.")
    if url is None:
        return Command("add-feed", feed=feed_id)
    try:
        url = check_feed_url(url)
    except RefusedURL as e:
        raise CommandError(f"Cannot add that feed: {escape_mrkdwn(str(e))}.") from e
    return Command("add-feed", url=url, feed=feed_id)


def parse_remove_feed(rest: str) -> Command:
    words = rest.split()
    if len(words) > 1:
        raise CommandError("`remove-feed` takes one feed id, like `remove-feed hacker-news`.")
    return Command("remove-feed", feed=words[0] if words else None)


def feed_id_from_url(url: str, taken: set[str]) -> str:
    """A feed id for a URL added without `id:`: its host without www., numbered when taken."""
    host = re.sub(r"^www\.", "", (urlsplit(url).hostname or "feed").lower())
    base = re.sub(r"[^a-z0-9_.-]+", "-", host).strip("-.")[:MAX_FEED_ID] or "feed"
    candidate, number = base, 2
    while candidate in taken:
        suffix = f"-{number}"
        candidate = base[: MAX_FEED_ID - len(suffix)] + suffix
        number += 1
    return candidate


def parse_pause(text: str, now: datetime) -> datetime:
    """`2h`, `30m`, `1d` -> when the pause ends."""
    try:
        seconds = parse_duration(text.strip() or "?")
    except ValueError as e:
        raise CommandError(
            f"Pause for how long? Like `pause 2h` or `pause 30m` ({escape_mrkdwn(str(e))})."
        ) from e
    if timedelta(seconds=seconds) > MAX_PAUSE:
        raise CommandError("A pause lasts at most 30 days; unsubscribe to stop alerts for longer.")
    return now + timedelta(seconds=seconds)


def parse_count(text: str) -> int:
    word = text.strip()
    if not word:
        return LATEST_DEFAULT
    if not word.isdigit() or int(word) < 1:
        raise CommandError(
            f"`latest` takes a number of items, like `latest 5` (got `{escape_mrkdwn(word)}`)."
        )
    return min(int(word), LATEST_MAX)


# -- answers over data ---------------------------------------------------------------------------------


def text_reply(text: str) -> Reply:
    return build_reply(text.split("\n"))


def newest_unique(entries: Iterable[ArchivedItem]) -> list[ArchivedItem]:
    """Newest first, one per link (the same article in two feeds is listed once)."""
    seen: set[str] = set()
    out = []
    for entry in sorted(entries, key=lambda e: e.when, reverse=True):
        identity = entry.item.link or f"{entry.item.feed_id}\x1f{entry.item.key}"
        if identity not in seen:
            seen.add(identity)
            out.append(entry)
    return out


def search_archive(
    entries: Iterable[ArchivedItem], terms: Sequence[str], *, feed: str | None = None
) -> list[ArchivedItem]:
    """Archived items in which any term occurs (title or summary), newest first, one per link."""
    found = [
        entry
        for entry in entries
        if (feed is None or entry.item.feed_id == feed)
        and (match_keywords(entry.item.title, terms) or match_keywords(entry.item.summary, terms))
    ]
    return newest_unique(found)


def latest_matches(entries: Iterable[ArchivedItem], rules: Sequence[ChannelRule]) -> list[ArchivedItem]:
    """Archived items the channel's rules match (each with its own feed filter), newest first."""
    matcher = RuleMatcher(rules)
    return newest_unique(entry for entry in entries if matcher.match_item(entry.item))


def item_line(item: Item, when: datetime, feed_title: str) -> Line:
    """An archived item as one line: its linked title, then the feed and when, all literal."""
    title = trim(clean_text(item.title) or item.link or "(untitled)", 250)
    return (
        rich.text("• "),
        rich.link(item.link, title),
        rich.text("\n   " + trim(clean_text(feed_title), 80) + " · "),
        rich.date(when),
    )


def items_lines(heading: str, entries: Sequence[ArchivedItem], feed_titles: dict[str, str]) -> list[Line]:
    lines: list[Line] = [heading]
    lines += [item_line(e.item, e.when, feed_titles.get(e.item.feed_id, e.item.feed_id)) for e in entries]
    return lines


def items_reply(
    heading: str, entries: Sequence[ArchivedItem], feed_titles: dict[str, str], *, empty: str
) -> Reply:
    if not entries:
        return text_reply(empty)
    return build_reply(items_lines(heading, entries, feed_titles), text=f"{heading} ({len(entries)})")


def subscribed_reply(
    lines: Sequence[str], recent: Sequence[ArchivedItem], feed_titles: dict[str, str]
) -> Reply:
    """What a subscribe did, then a few recent items like it (a preview: not posted)."""
    if recent:
        heading = "Recent items like these (not posted; for a taste of what to expect):"
        preview = items_lines(heading, recent, feed_titles)
    else:
        preview = ["Nothing like this in the archive yet."]
    return build_reply([*lines, *preview])


def explain_text(text: str, rules: Sequence[ChannelRule], command: str = "/feeds") -> Reply:
    """Which of the channel's terms match `text`, which exclude it, and the text with the hits in bold."""
    if not text.strip():
        return text_reply(f"Give me some text to try, like `{command} test Nexperia wins export licence`.")
    if not rules:
        return text_reply("This channel has no subscriptions yet, so nothing would match.")
    item = Item(feed_id="", key="test", link="", title=" ".join(text.split()))
    verdicts = RuleMatcher(rules).explain_item(item, ignore_feed_filter=True)
    lines = []
    matched_terms: list[str] = []
    for verdict in verdicts:
        origin = rule_origin(verdict.rule)
        for term in verdict.keywords:
            lines.append(f"✅ `{escape_mrkdwn(term)}` matches ({kind_of(term)}; {origin})")
            matched_terms.append(term)
        for term in verdict.excluded_by:
            lines.append(f"🚫 `{escape_mrkdwn(term)}` excludes it ({origin})")
    for rule in rules:
        if rule.query:
            lines.extend(explain_query(rule.query, item, rule_origin(rule)))
    if not any(v.matched for v in verdicts):
        lines.insert(
            0, "*No alert:* " + ("an exclude term wins." if verdicts else "no term of this channel matches.")
        )
    else:
        lines.insert(0, "*This would alert here.*")
    lines.append("> " + highlight(item.title, tuple(matched_terms)))
    return text_reply("\n".join(lines))


def explain_query(query: str, item: Item, origin: str) -> list[str]:
    """Whether a query matches the text, and which of its terms occur (✅) or not (▫️)."""
    node = parse_query(query)
    text = ItemText(item)
    verdict = "✅ matches" if evaluate(node, text) else "does not match"
    parts = []
    for term, positive in dict.fromkeys(terms_of(node)):
        mark = "✅" if text.occurs(term) else "▫️"
        scope = f"{term.field}:" if term.field else ""
        parts.append(f"{mark} `{scope}{escape_mrkdwn(term.text)}`" + ("" if positive else " (NOT)"))
    return [f"query `{escape_mrkdwn(query)}` {verdict} ({origin})", "   " + " · ".join(parts)]


def kind_of(term: str) -> str:
    try:
        keyword = compile_keyword(term)
    except ValueError:
        return "the query"
    if keyword.text.endswith("*"):
        return "words starting with " + escape_mrkdwn(keyword.text[:-1])
    if len(keyword.text.split()) > 1:
        return "the whole phrase"
    return "the whole word, any case"


def rule_origin(rule: ChannelRule) -> str:
    if rule.subscription is not None:
        sub = rule.subscription
        return f"added by <@{sub.added_by}> {slack_date(sub.added_at)}"
    return f"rules.yaml line {rule.location.line}" if rule.location else "rules.yaml"


def feeds_label(feeds: Sequence[str] | None) -> str:
    return "every feed" if not feeds else "feed " + ", ".join(f"`{f}`" for f in feeds)


def list_reply(
    channel_label: str,
    rules: Sequence[ChannelRule],
    pause_until: datetime | None,
    command: str = "/feeds",
    feeds: Sequence[FeedConfig] = (),
) -> Reply:
    if not rules:
        empty = (
            f"{channel_label} has no subscriptions. "
            f'Add one with `{command} subscribe Nexperia "export controls"`.'
        )
        return build_reply([empty, *feeds_lines(feeds)])
    lines: list[Line] = [f"*Subscriptions of {channel_label}*"]
    for rule in rules:
        terms = ", ".join(
            [f"`{escape_mrkdwn(t)}`" for t in rule.keywords]
            + ([f"query `{escape_mrkdwn(rule.query)}`"] if rule.query else [])
        )
        line = f"• {terms} · {feeds_label(rule.feeds)} · {rule_origin(rule)}"
        if rule.exclude:
            line += " · except " + ", ".join(f"`{escape_mrkdwn(t)}`" for t in rule.exclude)
        paging = describe_oncall(rule.oncall)
        if paging:
            line += "\n   " + paging
        if rule.subscription is None:
            line += " _(managed in rules.yaml)_"
        lines.append(line)
    if pause_until is not None:
        lines.append(f"⏸ Paused until {slack_date(pause_until)}; `{command} resume` delivers what was held.")
    return build_reply([*lines, *feeds_lines(feeds)], text=str(lines[0]))


def feed_origin(feed: FeedConfig) -> str:
    if feed.added is not None:
        return f"added by <@{feed.added.added_by}> {slack_date(feed.added.added_at)}"
    return f"rules.yaml line {feed.location.line}" if feed.location else "rules.yaml"


def feeds_lines(feeds: Sequence[FeedConfig]) -> list[Line]:
    """Every feed the bot polls, and where it comes from (a feed added from Slack shows its host only:
    its URL may carry a token)."""
    if not feeds:
        return []
    lines: list[Line] = ["*Feeds*"]
    for feed in feeds:
        if feed.added is not None:
            # The title is the feed's own: literal, so its `*` or `_` format nothing.
            title = trim(clean_text(feed.added.title), 80) or "(untitled)"
            host = urlsplit(feed.url).hostname or ""
            added = feed.added
            lines.append(
                (
                    rich.text("• "),
                    rich.text(feed.id, code=True),
                    rich.text(f" {title} · {host} · added by "),
                    rich.mention(f"<@{added.added_by}>"),
                    rich.text(" "),
                    rich.date(added.added_at),
                )
            )
        else:
            lines.append(f"• `{feed.id}` · {feed_origin(feed)}")
    return lines


def describe_oncall(oncall: OnCall) -> str:
    """The entry's paging options in a few words ("" for a plain entry)."""
    parts = []
    if oncall.priority != "normal":
        parts.append("🚨 high priority" if oncall.priority == "high" else "low priority")
    if oncall.mention:
        parts.append(f"pages {escape_mrkdwn(oncall.mention)}")
    if oncall.ack:
        parts.append("acknowledge button")
    if oncall.escalate:
        e = oncall.escalate
        minutes = e.after_seconds // 60
        parts.append(f"escalates to {escape_mrkdwn(e.to)} after {minutes}m (up to {e.repeat}×)")
    if oncall.quiet_hours:
        q = oncall.quiet_hours
        parts.append(f"quiet {q.start:%H:%M}–{q.end:%H:%M} {q.tz}")
    if oncall.digest:
        parts.append(f"daily digest at {oncall.digest.at:%H:%M} {oncall.digest.tz}")
    return " · ".join(parts)


def export_snippet(
    channel: str, comment: str, subscriptions: Sequence[Subscription], feeds: Sequence[AddedFeed] = ()
) -> str:
    """The feeds added from Slack as `feeds:` entries of rules.yaml, and the channel's Slack-added
    subscriptions as `channels:` entries, one per feed filter."""
    by_feed: dict[str | None, list[str]] = {}
    entries: list[dict[str, object]] = []
    for sub in subscriptions:
        if sub.is_query:
            entries.append({"channel": channel, "query": sub.term})
        else:
            by_feed.setdefault(sub.feed, []).append(sub.term)
    for feed, terms in by_feed.items():
        entry: dict[str, object] = {"channel": channel}
        if feed:
            entry["feeds"] = [feed]
        entry["keywords"] = terms
        entries.append(entry)
    document: dict[str, object] = {}
    if feeds:
        document["feeds"] = [{"id": feed.id, "url": feed.url} for feed in feeds]
    if entries:
        document["channels"] = entries
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return f"# {comment}, exported from Slack\n{body}"


def export_reply(
    channel: str,
    channel_label: str,
    comment: str,
    subscriptions: Sequence[Subscription],
    command: str = "/feeds",
    feeds: Sequence[AddedFeed] = (),
    note: str | None = None,
) -> Reply:
    """`note` goes right under the heading, so a long snippet's "…and N more lines" never hides it."""
    if not subscriptions and not feeds:
        return text_reply(f"{channel_label} has no subscriptions added from Slack; nothing to export.")
    snippet = escape_mrkdwn(export_snippet(channel, comment, subscriptions, feeds))
    if feeds:
        heading = (
            "Add the entries below to the `feeds:` and `channels:` lists in rules.yaml, then "
            f"`{command} unsubscribe all` here and `{command} remove-feed ID` for each feed "
            "(rules.yaml's feed then stays, with its subscriptions):"
        )
    else:
        heading = (
            f"Add the entries below to the `channels:` list in rules.yaml, then `{command} unsubscribe all` "
            "here:"
        )
    notes: list[Line] = [note] if note else []
    lines: list[Line] = [heading, *notes, *(CodeLine(line) for line in snippet.split("\n"))]
    return build_reply(lines, text=heading)


def help_reply(command: str, unknown: str | None = None) -> Reply:
    c = command
    lines = []
    if unknown:
        lines.append(f"I don't know `{escape_mrkdwn(unknown)}`. Here is what I can do:")
    lines += [
        f'`{c} subscribe Huawei "scaling law" [feed:ID]`: alert this channel about these terms (any one).',
        f"`{c} unsubscribe Huawei` or `{c} unsubscribe all`: stop terms added here.",
        f"`{c} list`: this channel's subscriptions and where they come from.",
        f"`{c} search nexperia [days:30]`: the newest matching items the bot has seen.",
        f"`{c} latest [5]`: the newest items matching this channel's subscriptions.",
        f"`{c} test <text>`: which of this channel's terms would match that text, and why.",
        f"`{c} pause 2h` / `{c} resume`: hold alerts here; held ones come on resume.",
        f"`{c} export`: this channel's subscriptions as a rules.yaml snippet.",
        f"`{c} oncall`: this channel's alerts waiting for an acknowledgement.",
        f"`{c} add-feed https://example.com/feed.xml [id:name]`: poll another feed (public http(s) only).",
        f"`{c} remove-feed name`: stop polling a feed added here, with the subscriptions only it fed.",
        'Terms: a word (`Nexperia`), a "quoted phrase", or a prefix (`sanction*`). '
        "In a direct message with the app, the same commands manage your personal watch.",
    ]
    return text_reply("\n".join(lines))


def oncall_reply(channel_label: str, alerts: Sequence[OpenAlert], now: datetime) -> Reply:
    """Open (unacknowledged) alerts, oldest first, with their age and escalation step."""
    waiting = [alert for alert in alerts if alert.open]
    if not waiting:
        return text_reply(f"No open alerts in {channel_label}: everything is acknowledged.")
    heading = f"*Open alerts in {channel_label}* ({len(waiting)}, oldest first)"
    lines: list[Line] = [heading]
    for alert in waiting:
        title = trim(clean_text(alert.item.title) or alert.item.link or "(untitled)", 250)
        escalate = alert.policy.escalate
        if escalate is None:
            step = "no escalation"
        else:
            step = f"escalated {alert.escalations_sent} of {escalate.repeat}"
            upcoming = alert.next_escalation()
            if upcoming is not None:
                step += f", next to {escalate.to} in {describe_age(now, upcoming)}"
        marker = "🚨 " if alert.policy.high else ""
        lines.append(
            (
                rich.text(f"• {marker}"),
                rich.link(alert.item.link, title),
                rich.text(f"\n   open {describe_age(alert.posted_at, now)} · {step}"),
            )
        )
    return build_reply(lines, text=heading)


# -- feeds added from Slack ------------------------------------------------------------------------------


def duration_label(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def added_feed_reply(feed: FeedConfig, title: str, items: int, backfill: int, command: str) -> Reply:
    name = trim(clean_text(title), 150) or "(untitled)"
    count = f"{items} item{'s' if items != 1 else ''}"
    lines: list[Line] = [
        (
            rich.text("📡 Added feed "),
            rich.text(feed.id, code=True),
            rich.text(": "),
            rich.text(name, bold=True),  # the feed's own title: literal
            rich.text(f", {count} now, polled every {duration_label(feed.interval_seconds)} from now on."),
        )
    ]
    if backfill:
        newest = "newest match" if backfill == 1 else f"{backfill} newest matches"
        lines.append(
            f"No flood: its first poll posts at most the {newest} per rules.yaml channel that watches every "
            "feed, as for any new feed, and marks the rest seen; topics added from Slack start with its next "
            "new item."
        )
    else:
        lines.append(
            "No flood: what it holds now is marked seen, not posted; alerts start with its next item."
        )
    lines.append(
        f"`{command} subscribe <terms> feed:{feed.id}` watches only this one. Its items are for the channels "
        "that follow it, and for everyone once a public channel does; topics for every feed cover it then."
    )
    return build_reply(lines)


def removed_feed_reply(feed: FeedConfig, dropped: Sequence[Subscription], command: str) -> Reply:
    assert feed.added is not None
    title = trim(clean_text(feed.added.title), 150)
    lines: list[Line] = [
        (
            rich.text("🗑 Removed feed "),
            rich.text(feed.id, code=True),
            rich.text(f" ({title}), added by " if title else ", added by "),  # the feed's own title: literal
            rich.mention(f"<@{feed.added.added_by}>"),
            rich.text(" "),
            rich.date(feed.added.added_at),
            rich.text(": it is no longer polled."),
        )
    ]
    if dropped:
        terms = ", ".join(
            f"`{escape_mrkdwn(sub.term)}` in {channel_label_of(sub.channel)}" for sub in dropped
        )
        lines.append(f"Removed with it, as they watched only this feed: {terms}. Topics for every feed stay.")
    lines.append(f"`{command} add-feed` brings it back, starting afresh (no flood).")
    return build_reply(lines)


def channel_label_of(channel: str) -> str:
    """A channel as a mention; a direct message is someone's personal watch, not to be named."""
    return "a personal watch" if channel.startswith("D") else f"<#{channel}>"
