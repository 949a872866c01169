"""Feed text as Slack `rich_text` elements, the one place Slack takes text literally: bold, links, dates
and mentions are explicit elements, so `*`, `_`, `~`, backticks and `<` from a feed stay characters.

Pure: builds Block Kit dicts only. No mrkdwn here (rich_text needs no escaping) and no Slack client.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from bot.rules import highlight_spans

Element = dict[str, object]

DATE_FORMAT = "{date_short_pretty} {time}"
_WEB_URL = re.compile(r"(?i)^https?://[^\s/]")
# Paging mentions arrive in Slack's mrkdwn syntax (bot.oncall); rich_text has an element for each.
_USER = re.compile(r"^<@([UW][A-Z0-9]+)>$")
_USERGROUP = re.compile(r"^<!subteam\^([A-Z0-9]+)(?:\|[^>]*)?>$")
_BROADCAST = re.compile(r"^<!(here|channel|everyone)(?:\|[^>]*)?>$")
_CHANNEL = re.compile(r"^<#([CGD][A-Z0-9]+)(?:\|[^>]*)?>$")
URL_LIMIT = 3000  # Slack's limit for a URL in Block Kit; a longer link is shown as text


def text(value: str, *, bold: bool = False, italic: bool = False, code: bool = False) -> Element:
    element: Element = {"type": "text", "text": value}
    style = {name: True for name, on in (("bold", bold), ("italic", italic), ("code", code)) if on}
    if style:
        element["style"] = style
    return element


def link(url: str, label: str, *, bold: bool = False) -> Element:
    """A link when the URL is a web address Slack accepts; anything else (javascript:, relative, too long)
    is shown as its label, never linked."""
    if not _WEB_URL.match(url or "") or len(url) > URL_LIMIT:
        return text(label, bold=bold)
    element: Element = {"type": "link", "url": url, "text": label}
    if bold:
        element["style"] = {"bold": True}
    return element


def date(moment: datetime) -> Element:
    """Shown in each reader's own time zone; the fallback is UTC for clients that cannot."""
    return {
        "type": "date",
        "timestamp": int(moment.timestamp()),
        "format": DATE_FORMAT,
        "fallback": moment.strftime("%Y-%m-%d %H:%M UTC"),
    }


def mention(syntax: str) -> Element:
    """A mention written in Slack's syntax (`<@U…>`, `<!subteam^S…>`, `<!here>`, `<#C…>`) as its element;
    anything else as literal text, which notifies nobody."""
    if found := _USER.match(syntax):
        return {"type": "user", "user_id": found.group(1)}
    if found := _USERGROUP.match(syntax):
        return {"type": "usergroup", "usergroup_id": found.group(1)}
    if found := _BROADCAST.match(syntax):
        return {"type": "broadcast", "range": found.group(1)}
    if found := _CHANNEL.match(syntax):
        return {"type": "channel", "channel_id": found.group(1)}
    return text(syntax)


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def highlighted(value: str, keywords: Sequence[str]) -> list[Element]:
    """The text with its matched words bold. A match inside a word (a substring hit in Chinese text) stays
    plain, as a reader would not expect half a word in bold."""
    out: list[Element] = []
    position = 0
    for start, end in highlight_spans(value, tuple(keywords)):
        before = value[start - 1] if start > 0 else " "
        after = value[end] if end < len(value) else " "
        if start < position or _is_word_char(before) or _is_word_char(after):
            continue
        if start > position:
            out.append(text(value[position:start]))
        out.append(text(value[start:end], bold=True))
        position = end
    if position < len(value):
        out.append(text(value[position:]))
    return out


def section(elements: Iterable[Element]) -> Element:
    """A rich_text_section; adjacent text elements of the same style are merged (fewer, shorter payloads)."""
    merged: list[Element] = []
    for element in elements:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and element.get("type") == "text"
            and previous.get("type") == "text"
            and element.get("style") == previous.get("style")
        ):
            merged[-1] = {**previous, "text": str(previous["text"]) + str(element["text"])}
        elif element.get("type") != "text" or element.get("text"):
            merged.append(element)
    return {"type": "rich_text_section", "elements": merged}


def block(*sections: Element) -> Element:
    return {"type": "rich_text", "elements": list(sections)}


def line_elements(lines: Sequence[Sequence[Element]]) -> list[Element]:
    """Several lines as one element list, a newline between them."""
    out: list[Element] = []
    for number, line in enumerate(lines):
        if number:
            out.append(text("\n"))
        out.extend(line)
    return out


def shown(element: Element) -> str:
    """What a reader sees of an element (a date as its fallback), to measure and to build fallback text."""
    kind = element.get("type")
    if kind in ("text", "link"):
        return str(element.get("text") or element.get("url") or "")
    if kind == "date":
        return str(element.get("fallback", ""))
    if kind == "rich_text_section" or kind == "rich_text":
        inner = element.get("elements")
        return "".join(shown(e) for e in inner) if isinstance(inner, list) else ""
    return "@mention"


def size(elements: Iterable[Element]) -> int:
    """Characters a line costs in a payload: what is shown plus each link's URL."""
    return sum(len(shown(e)) + len(str(e.get("url", ""))) for e in elements)
