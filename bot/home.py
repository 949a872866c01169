"""The App Home tab, pure: the bot's status, the user's channels with subscriptions, and the latest alerts,
as a Block Kit `home` view. Feed text (titles, a host's error) is shown literally: rich_text or inline code,
never mrkdwn that a feed could format."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot import richtext as rich
from bot.blocks import clean_text, escape_mrkdwn, slack_date, trim
from bot.model import ChannelRule, Item
from bot.notices import literal_mrkdwn
from bot.store import ChannelProblem

MAX_BLOCKS = 100  # Slack's limit for a view
# What each part may take of it, so that a long list (a hundred feeds added from Slack) never pushes the
# user's channels and latest alerts out of the view: five headers and a context line, 40 feeds, 10 broken
# channels and 30 of the user's channels (each with one "…and N more" line), and 10 alerts: 99 blocks.
FEEDS_SHOWN = 40
BROKEN_SHOWN = 10
CHANNELS_SHOWN = 30
RECENT_SHOWN = 10


@dataclass(frozen=True)
class FeedStatus:
    id: str
    url: str
    last_poll: datetime | None
    last_status: str | None
    last_error: str | None
    consecutive_failures: int
    items_seen: int
    failing_since: datetime | None = None
    gone_since: datetime | None = None


@dataclass(frozen=True)
class RecentAlert:
    channel: str
    item: Item
    at: datetime


def _section(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": trim(text, 3000)}}


def _context(text: str) -> dict[str, object]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": trim(text, 3000)}]}


def _header(text: str) -> dict[str, object]:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


def feed_line(feed: FeedStatus) -> str:
    if feed.gone_since:
        state = f"⚫ gone since {slack_date(feed.gone_since)} (its host answers 410 Gone): checked once a day"
    elif feed.consecutive_failures:
        reason = literal_mrkdwn(feed.last_error or "unknown error", 200)
        since = f" since {slack_date(feed.failing_since)}" if feed.failing_since else ""
        state = f"🔴 failing{since} ({feed.consecutive_failures} in a row): {reason}"
    elif feed.last_poll is None:
        state = "⏳ not polled yet"
    else:
        state = "🟢 ok"
    polled = slack_date(feed.last_poll) if feed.last_poll else "never"
    return f"*{escape_mrkdwn(feed.id)}* · {state}\nlast poll {polled} · {feed.items_seen} items seen"


CHANNEL_PROBLEMS = {
    "channel_not_found": "Slack says there is no such channel (deleted, or private without the bot)",
    "is_archived": "the channel is archived",
    "not_in_channel": "the bot is not in this private channel: `/invite` it",
}


def home_view(
    *,
    command: str,
    feeds: Sequence[FeedStatus],
    channel_rules: Mapping[str, Sequence[ChannelRule]],
    recent: Sequence[RecentAlert],
    paused: Mapping[str, datetime],
    broken: Sequence[ChannelProblem] = (),
) -> dict[str, object]:
    """`channel_rules`: the user's channels (and personal watch, keyed by DM channel) with their rules."""
    blocks: list[dict[str, object]] = [
        _header("feedwatch"),
        _context(f"Manage alerts with `{command} help`."),
    ]

    blocks.append(_header("Feeds"))
    for feed in feeds[:FEEDS_SHOWN]:
        blocks.append(_section(feed_line(feed)))
    if len(feeds) > FEEDS_SHOWN:
        hidden = feeds[FEEDS_SHOWN:]
        failing = sum(1 for feed in hidden if feed.consecutive_failures or feed.gone_since)
        blocks.append(
            _section(
                f"…and {len(hidden)} more feeds" + (f", {failing} of them failing" if failing else "") + "."
            )
        )
    if not feeds:
        blocks.append(_section("No feeds configured (see rules.yaml)."))

    if broken:
        blocks.append(_header("Channels not receiving alerts"))
        for problem in broken[:BROKEN_SHOWN]:
            reason = CHANNEL_PROBLEMS.get(problem.error, problem.error)
            blocks.append(
                _section(
                    f"⚠️ <#{problem.channel}>: {reason} (since {slack_date(problem.since)}). Tried again "
                    "hourly; alerts for it are kept for a day."
                )
            )
        if len(broken) > BROKEN_SHOWN:
            blocks.append(_section(f"…and {len(broken) - BROKEN_SHOWN} more channels."))

    blocks.append(_header("Your channels"))
    for channel, rules in list(channel_rules.items())[:CHANNELS_SHOWN]:
        terms = ", ".join(f"`{escape_mrkdwn(term)}`" for rule in rules for term in rule.keywords)
        label = "Your personal watch" if channel.startswith("D") else f"<#{channel}>"
        line = f"{label}: {trim(terms, 2500)}"
        if channel in paused:
            line += f"\n⏸ paused until {slack_date(paused[channel])}"
        blocks.append(_section(line))
    if len(channel_rules) > CHANNELS_SHOWN:
        blocks.append(_section(f"…and {len(channel_rules) - CHANNELS_SHOWN} more of your channels."))
    if not channel_rules:
        blocks.append(
            _section(
                f"None of your channels has subscriptions. In a channel: `{command} subscribe Nexperia`."
            )
        )

    blocks.append(_header("Latest alerts"))
    for alert in recent[:RECENT_SHOWN]:
        title = trim(clean_text(alert.item.title) or alert.item.link or "(untitled)", 150)
        shown = [rich.link(alert.item.link, title), rich.text("\n")]
        shown += [rich.mention(f"<#{alert.channel}>"), rich.text(" · "), rich.date(alert.at)]
        blocks.append(rich.block(rich.section(shown)))
    if not recent:
        blocks.append(_section("No alerts yet."))
    return {"type": "home", "blocks": blocks[:MAX_BLOCKS]}
