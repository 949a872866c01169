"""The bot's short messages about a feed or an alert rather than an article: a feed fails, is gone or works
again, an alert nobody acknowledged is escalated, and a flood's "N more" that one poll did not post.

Pure: text and blocks only, no Slack client. Text a feed or its host controls (an error, a title) is put
where Slack shows it literally: inline code in mrkdwn, or rich_text elements.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from bot import richtext as rich
from bot.blocks import clean_text, escape_mrkdwn, mrkdwn_link, trim
from bot.health import RECOVERED, FeedHealth
from bot.oncall import OpenAlert

ERROR_LIMIT = 300
ESCALATION_TITLE_LIMIT = 150


def literal_mrkdwn(text: str, limit: int) -> str:
    """Outside text as inline code: mrkdwn formats nothing inside it, and escaping keeps it from pinging or
    linking. A backtick would end the code, so it becomes an apostrophe."""
    return "`" + escape_mrkdwn(trim(clean_text(text).replace("`", "'"), limit) or " ") + "`"


def render_feed_notice(feed_id: str, health: FeedHealth) -> str:
    """The one plain message that tells a feed's channels it fails (or is gone), or that it works again.
    Times in plain UTC: the console prints this text as it is."""
    name = f"*{escape_mrkdwn(feed_id)}*"
    if health.notice == RECOVERED:
        since = f" (it had been failing since {_utc(health.failing_since)})" if health.failing_since else ""
        return f"✅ Feed {name} works again{since}. Its alerts are back."
    if health.gone_since is not None:
        return (
            f"⚠️ Feed {name} is gone: since {_utc(health.gone_since)} its host answers 410 Gone. I will check "
            "it once a day and say so if it comes back; if it is gone for good, remove it from the rules."
        )
    error = literal_mrkdwn(health.last_error or "unknown error", ERROR_LIMIT)
    return (
        f"⚠️ Feed {name} has failed {health.failures} poll{'' if health.failures == 1 else 's'} in a row "
        f"since {_utc(health.failing_since)}: "
        f"{error}. No alerts come from it meanwhile; I will say so when it works again."
    )


def _utc(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "an unknown time"


def render_escalation(
    alert: OpenAlert, step: int, age: str, mention: str | None
) -> tuple[str, tuple[dict[str, object], ...]]:
    """An escalation reply: (notification text, blocks). `mention` is resolved Slack syntax, or None
    when the handle is unknown (then the handle is shown as written, notifying nobody). The article's
    title is a rich_text link, so a feed's `*` or `_` formats nothing."""
    escalate = alert.policy.escalate
    assert escalate is not None
    title = trim(clean_text(alert.item.title) or "(untitled)", ESCALATION_TITLE_LIMIT)
    who = rich.mention(mention) if mention else rich.text(escalate.to)
    tail = f" (escalation {step} of {escalate.repeat})"
    elements = [who, rich.text(f" ⏰ Not acknowledged after {age}: "), rich.link(alert.item.link, title)]
    block = rich.block(rich.section([*elements, rich.text(tail)]))
    who_text = mention or escape_mrkdwn(escalate.to)
    text = f"{who_text} ⏰ Not acknowledged after {age}: {escape_mrkdwn(title)}{tail}"
    return text, (block,)


def public_feed_link(url: str) -> str:
    """The feed's address without what may be a secret (credentials, query, fragment): it is shown in the
    channel, where everyone reads it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def render_left_out_notice(feed_id: str, url: str, count: int, kept: int) -> str:
    """The one message that says how many of a flood were not posted, and where they can be read."""
    link = mrkdwn_link(public_feed_link(url), "Read them in the feed")
    where = f" {link}." if link.startswith("<") else ""
    noun = "item" if count == 1 else "items"
    return (
        f"➕ {count} more matching {noun} from feed *{escape_mrkdwn(feed_id)}* in this poll were not posted "
        f"(one poll sends a channel at most {kept}).{where}"
    )
