"""Renders a channel match as a Slack message (fallback text, Block Kit, metadata) or as terminal text, and
the short notice that a feed fails or works again.

Pure: no Slack client here. Feed text is untrusted, so everything from a feed is escaped for mrkdwn and
trimmed to Block Kit's limits before it reaches a payload.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from bot import richtext as rich
from bot.model import ChannelMatch, Item, Message
from bot.rules import highlight_spans

ALERT_EVENT_TYPE = "feed_alert"  # lets the bot recognise its own posts later (conversations.history)

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks): section text 3000, context
# element text 3000, image alt text 2000, image URL 3000. Our own limits are tighter, for readability.
SECTION_TEXT_LIMIT = 3000
CONTEXT_TEXT_LIMIT = 3000
ALT_TEXT_LIMIT = 2000
IMAGE_URL_LIMIT = 3000
TITLE_LIMIT = 250
SUMMARY_LIMIT = 600
FALLBACK_TEXT_LIMIT = 1000

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters; after this, feed text can neither ping nor forge a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clean_text(text: str) -> str:
    """Drops control and invisible formatting characters (they can hide or reorder text) and trims."""
    return " ".join(_CONTROL_CHARS.sub("", text).split())


def trim(text: str, limit: int) -> str:
    """Cuts at a word boundary and marks the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"


def is_web_url(url: str | None) -> bool:
    return bool(url) and re.match(r"(?i)^https?://[^\s/]", url or "") is not None


def _link_target(url: str) -> str:
    # Inside <url|text>, "|" ends the URL and "<", ">" end the link: percent-encode them, then escape "&".
    safe = quote(url, safe=":/?#[]@!$&'()*+,;=%~-._")
    return escape_mrkdwn(safe)


def mrkdwn_link(url: str, label: str) -> str:
    label = escape_mrkdwn(label)
    if not is_web_url(url):
        return label  # a javascript: or relative link is shown as text, never linked
    return f"<{_link_target(url)}|{label}>"


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def highlight(text: str, keywords: tuple[str, ...]) -> str:
    """Escapes text and bolds the matched words. Bold needs non-word characters around the asterisks in
    Slack, so a match inside a word (a substring match in Chinese text) stays plain rather than show `*`."""
    out: list[str] = []
    position = 0
    for start, end in highlight_spans(text, keywords):
        before = text[start - 1] if start > 0 else " "
        after = text[end] if end < len(text) else " "
        if _is_word_char(before) or _is_word_char(after):
            continue
        out.append(escape_mrkdwn(text[position:start]))
        out.append(f"*{escape_mrkdwn(text[start:end])}*")
        position = end
    out.append(escape_mrkdwn(text[position:]))
    return "".join(out)


def slack_date(moment: datetime) -> str:
    """Slack shows this in each reader's own time zone; the fallback is UTC for clients that can't."""
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _keyword_label(keyword: str) -> str:
    return "`" + escape_mrkdwn(keyword.replace("`", "'")) + "`"


def alert_metadata(item: Item) -> dict[str, object]:
    return {
        "event_type": ALERT_EVENT_TYPE,
        "event_payload": {"feed_id": item.feed_id, "item_key": item.key, "link": item.link},
    }


MUTE_ACTION_ID = "mute_topic"
ACK_ACTION_ID = "ack_alert"
BUTTON_VALUE_LIMIT = 2000


def mute_button(match: ChannelMatch) -> dict[str, object] | None:
    """ "Mute this topic here", when a term added from Slack matched: after a confirmation it removes those
    terms. It carries every matched term, so the answer can explain the ones rules.yaml keeps (those are
    the operator's); an alert matched by rules.yaml alone gets no button."""
    slack_terms = [
        term
        for rule in match.rules
        if rule.subscription is not None
        for term in rule.keywords
        if term in match.keywords
    ] + [rule.query for rule in match.rules if rule.subscription is not None and rule.query]
    if not slack_terms:
        return None
    terms = slack_terms + [term for term in match.keywords if term not in slack_terms]
    value = json.dumps(
        {"terms": terms, "key": match.item.key, "feed": match.item.feed_id}, ensure_ascii=False
    )
    while len(value) > BUTTON_VALUE_LIMIT and len(terms) > 1:
        terms.pop()
        # The key stays: it names the alert, which the press is checked against (bot.slackapp.on_mute).
        value = json.dumps(
            {"terms": terms, "key": match.item.key, "feed": match.item.feed_id}, ensure_ascii=False
        )
    shown = ", ".join(slack_terms)
    return {
        "type": "button",
        "action_id": MUTE_ACTION_ID,
        "text": {"type": "plain_text", "text": "Mute this topic here"},
        "value": value[:BUTTON_VALUE_LIMIT],
        "confirm": {
            "title": {"type": "plain_text", "text": "Mute this topic?"},
            "text": {"type": "plain_text", "text": trim(f"Stop alerts here for: {shown}", 300)},
            "confirm": {"type": "plain_text", "text": "Mute"},
            "deny": {"type": "plain_text", "text": "Keep"},
        },
    }


def ack_button(alert_id: str) -> dict[str, object]:
    return {
        "type": "button",
        "action_id": ACK_ACTION_ID,
        "style": "primary",
        "text": {"type": "plain_text", "text": "Acknowledge"},
        "value": alert_id[:BUTTON_VALUE_LIMIT],
    }


@dataclass(frozen=True)
class Paging:
    """How an alert pages (see bot.oncall): its priority, the mentions to notify (already in Slack's
    syntax), and an Acknowledge button (`ack_id`), or who acknowledged it and when."""

    priority: str = "normal"
    mentions: tuple[str, ...] = ()
    ack_id: str | None = None
    acked: tuple[str, datetime] | None = None


def render_alert(
    match: ChannelMatch, *, source: str, interactive: bool = False, paging: Paging = Paging()
) -> Message:
    """One Slack message for one (channel, item): linked title, summary with the matched words in bold,
    a context line with source, author, time and keywords, and the thumbnail beside the keywords.
    `interactive` (the app hears button presses) adds the mute and Acknowledge buttons where they apply;
    `paging` adds mentions (in the text too, so Slack notifies) and a marker for high priority.

    Feed text goes only into rich_text `text` and `link` elements and plain_text, which Slack shows
    literally: a feed's `*`, `_`, `~` or backticks format nothing. The thumbnail is a section's accessory
    (a section of the bot's own text), since Slack drops an accessory it cannot fetch but refuses a whole
    message over an `image` block."""
    item = match.item
    title = trim(clean_text(item.title) or "(untitled)", TITLE_LIMIT)
    summary = trim(clean_text(item.summary), SUMMARY_LIMIT)

    lead: list[rich.Element] = []
    for mention in paging.mentions:
        lead += [rich.mention(mention), rich.text(" ")]
    if paging.priority == "high":
        lead.append(rich.text("🚨 High priority", bold=True))
    if lead:
        lead.append(rich.text("\n"))
    body = [*lead, rich.link(item.link, title, bold=True)]
    if summary:
        body += [rich.text("\n"), *rich.highlighted(summary, match.keywords)]
    blocks: tuple[dict[str, object], ...] = (rich.block(rich.section(body)),)

    matched = "matched " + ", ".join(_keyword_label(k) for k in match.keywords)
    if paging.priority == "low":
        matched += " · low priority"
    if is_web_url(item.thumbnail) and len(item.thumbnail or "") <= IMAGE_URL_LIMIT:
        section: dict[str, object] = {
            "type": "section",
            "text": {"type": "mrkdwn", "text": trim(matched, SECTION_TEXT_LIMIT)},
            "accessory": {
                "type": "image",
                "image_url": item.thumbnail,
                "alt_text": trim(clean_text(item.title) or "article image", ALT_TEXT_LIMIT),
            },
        }
        blocks = (*blocks, section)
        matched = ""
    facts = [trim(clean_text(source), 80)]
    if item.author.strip():
        facts.append(trim(clean_text(item.author), 120))
    elements: list[dict[str, object]] = [
        {"type": "plain_text", "text": " · ".join(f for f in facts if f) or "feed", "emoji": False}
    ]
    dated = " · ".join(
        part for part in (slack_date(item.published) if item.published else "", matched) if part
    )
    if dated:
        elements.append({"type": "mrkdwn", "text": trim(dated, CONTEXT_TEXT_LIMIT)})
    blocks = (*blocks, {"type": "context", "elements": elements})

    # The fallback is what notifications show: the title, and the link when it fits (the blocks have it).
    fallback = escape_mrkdwn(trim(clean_text(item.title) or "(untitled)", TITLE_LIMIT))
    link = escape_mrkdwn(item.link)
    if is_web_url(item.link) and len(fallback) + 1 + len(link) <= FALLBACK_TEXT_LIMIT:
        fallback += " " + link
    if paging.priority == "high":
        fallback = "🚨 High priority: " + fallback
    elif paging.priority == "low":
        fallback = "(low priority) " + fallback
    if paging.mentions:
        fallback = " ".join(paging.mentions) + " " + fallback
    if paging.acked is not None:
        user, at = paging.acked
        blocks = (*blocks, _context_block(f"✅ Acknowledged by <@{escape_mrkdwn(user)}> {slack_date(at)}"))
    buttons = []
    if interactive and paging.ack_id is not None and paging.acked is None:
        buttons.append(ack_button(paging.ack_id))
    mute = mute_button(match) if interactive else None
    if mute is not None:
        buttons.append(mute)
    if buttons:
        blocks = (*blocks, {"type": "actions", "elements": buttons})
    return Message(channel=match.channel, text=fallback, blocks=blocks, metadata=alert_metadata(item))


def _context_block(text: str) -> dict[str, object]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": trim(text, CONTEXT_TEXT_LIMIT)}]}


def without_image(message: Message) -> Message:
    """The same message minus its thumbnail: Slack refuses a whole message when it cannot fetch an image."""
    blocks = tuple({k: v for k, v in block.items() if k != "accessory"} for block in message.blocks)
    return Message(channel=message.channel, text=message.text, blocks=blocks, metadata=message.metadata)


def as_plain_text(message: Message) -> Message:
    """The message without blocks, for when Slack refuses them: the notification text, which carries the
    title and link (and any on-call mentions), kept within Slack's limit for plain text."""
    return Message(
        channel=message.channel,
        text=trim(message.text, PLAIN_TEXT_LIMIT),
        blocks=(),
        metadata=message.metadata,
    )


PLAIN_TEXT_LIMIT = 3000


def render_console(match: ChannelMatch, *, source: str, channel_label: str | None = None) -> str:
    """What console mode prints instead of posting: the same facts as the Slack message, as plain text."""
    item = match.item
    lines = [
        f"▶ {channel_label or match.channel}  ·  matched: {', '.join(match.keywords)}",
        f"  {trim(clean_text(item.title) or '(untitled)', TITLE_LIMIT)}",
    ]
    if item.link:
        lines.append(f"  {item.link}")
    summary = trim(clean_text(item.summary), 300)
    if summary:
        lines.append(f"  {summary}")
    facts = [clean_text(source)]
    if item.author.strip():
        facts.append(clean_text(item.author))
    if item.published:
        facts.append(item.published.strftime("%Y-%m-%d %H:%M UTC"))
    if item.thumbnail:
        facts.append(f"image: {item.thumbnail}")
    lines.append("  " + " · ".join(facts))
    return "\n".join(lines)


GROUP_EVENT_TYPE = "feed_alert_group"  # a grouped message: every item it lists counts as delivered
MAX_BLOCKS = 50  # Slack's limit per message
# Slack also refuses a message whose blocks hold too much text in all (msg_blocks_too_long, at about 12k
# characters), and message metadata is meant to be small: a grouped message stays under both.
GROUP_TEXT_LIMIT = 10_000
GROUP_ITEM_LIMIT = 40


def group_metadata(items: Sequence[Item]) -> dict[str, object]:
    # Slack's metadata arrays hold objects, not strings: one object per item.
    return {
        "event_type": GROUP_EVENT_TYPE,
        "event_payload": {
            "items": [{"feed_id": i.feed_id, "item_key": i.key, "link": i.link} for i in items]
        },
    }


def _group_line(match: ChannelMatch, source: str) -> list[rich.Element]:
    item = match.item
    title = trim(clean_text(item.title) or "(untitled)", TITLE_LIMIT)
    line = [rich.text("• "), rich.link(item.link, title), rich.text(" · " + trim(clean_text(source), 80))]
    if item.published:
        line += [rich.text(" · "), rich.date(item.published)]
    return line


def block_chars(block: dict[str, object]) -> int:
    """The characters a block holds (what Slack counts towards its limits), of either kind."""
    if block.get("type") == "rich_text":
        sections = block.get("elements")
        assert isinstance(sections, list)
        return sum(rich.size(section["elements"]) for section in sections)
    text = block.get("text")
    return len(str(text.get("text", ""))) if isinstance(text, dict) else 0


GROUP_HEADING_ROOM = (
    200  # characters kept for the heading and a repeated keyword label when a part is re-rendered
)


def render_group(
    channel: str, entries: Sequence[tuple[ChannelMatch, str]], heading: str, *, split: bool = True
) -> list[Message]:
    """One message listing several matches (a digest, the end of quiet hours, a flood), grouped by keyword
    (an item under the first keyword it matched), split into several messages only where Slack's limits
    force it (with room to spare, so each part renders again as one message). Each message's metadata
    names every item it lists. `split=False` renders one message whatever its size (a part already cut)."""
    groups: dict[str, list[tuple[ChannelMatch, str]]] = {}
    for match, source in entries:
        groups.setdefault(match.keywords[0] if match.keywords else "", []).append((match, source))
    # (block, items it lists) in order; sections are packed up to the section limit.
    pieces: list[tuple[dict[str, object], list[Item]]] = []
    for keyword, members in groups.items():
        label = [
            rich.text(keyword, bold=True, code=True) if keyword else rich.text("Other", bold=True),
            rich.text(f" ({len(members)})" if keyword else ""),
        ]
        lines: list[list[rich.Element]] = [label]
        items: list[Item] = []
        for match, source in members:
            line = _group_line(match, source)
            # Sections are cut at Block Kit's limit whether or not the message may be split; a message
            # part is cut (below) with room to spare, so its sections come out the same when re-rendered.
            section_limit = SECTION_TEXT_LIMIT - (GROUP_HEADING_ROOM if split else 0)
            too_long = sum(rich.size(each) + 1 for each in [*lines, line]) > section_limit
            too_many = split and len(items) >= GROUP_ITEM_LIMIT
            if items and (too_long or too_many):
                pieces.append((_rich_lines(lines), items))
                lines, items = [], []
            lines.append(line)
            items.append(match.item)
        pieces.append((_rich_lines(lines), items))
    messages: list[Message] = []
    parts: list[list[tuple[dict[str, object], list[Item]]]] = [[]]

    def size(part: list[tuple[dict[str, object], list[Item]]]) -> tuple[int, int]:
        text = sum(block_chars(block) for block, _ in part)
        return text, sum(len(items) for _, items in part)

    for piece in pieces:
        text, count = size(parts[-1])
        piece_text, piece_count = size([piece])
        if (
            split
            and parts[-1]
            and (
                len(parts[-1]) >= MAX_BLOCKS - 2  # one block goes to the heading, one to a repeated label
                or text + piece_text > GROUP_TEXT_LIMIT - GROUP_HEADING_ROOM
                or count + piece_count > GROUP_ITEM_LIMIT
            )
        ):
            parts.append([])
        parts[-1].append(piece)
    for number, part in enumerate(parts, start=1):
        title = heading if len(parts) == 1 else f"{heading} (part {number} of {len(parts)})"
        items = [item for _, part_items in part for item in part_items]
        blocks = (_section_block(f"*{escape_mrkdwn(title)}*"), *(block for block, _ in part))
        messages.append(
            Message(channel=channel, text=escape_mrkdwn(title), blocks=blocks, metadata=group_metadata(items))
        )
    return messages


def _rich_lines(lines: list[list[rich.Element]]) -> dict[str, object]:
    return rich.block(rich.section(rich.line_elements(lines)))


def _section_block(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": trim(text, SECTION_TEXT_LIMIT)}}
