"""The one builder of slash-command replies: lines in, a Reply within Slack's limits out (at most 50 blocks,
a bounded size, lines in order, "…and N more" where it has to stop, never a cut inside an escape, a link
or a mention).

Pure: no Slack client. A line is either mrkdwn the bot wrote (already escaped) or a tuple of rich_text
elements, for lines that carry feed text (shown literally; see bot.richtext).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot import richtext as rich
from bot.blocks import escape_mrkdwn


class CodeLine(str):
    """A line shown in a code block (an export): what it holds is never formatted."""


Line = str | tuple[rich.Element, ...]

MAX_BLOCKS = 50  # Slack's limit per message
SECTION_LIMIT = 3000  # characters in one section block (and, to be safe, in one rich_text block)
# Slack refuses a message whose blocks hold too much text in all (msg_blocks_too_long, about 12k).
REPLY_TEXT_LIMIT = 10_000
FALLBACK_LIMIT = 3900  # the reply's plain `text`, which notifications show
CODE_FENCE = 8  # "```\n" and "\n```"
# What a cut must not fall inside: Slack's <…> markup (links, mentions, dates) and &…; escapes.
_UNCUTTABLE = re.compile(r"<[^<>\n]{0,3000}>|&(?:[a-z]{2,5}|#\d{1,6});")


@dataclass(frozen=True)
class Reply:
    """An ephemeral answer: fallback text and blocks (`in_channel` for an answer everyone sees)."""

    text: str
    blocks: tuple[dict[str, object], ...] = ()
    in_channel: bool = False

    def payload(self) -> dict[str, object]:
        body: dict[str, object] = {
            "response_type": "in_channel" if self.in_channel else "ephemeral",
            "text": self.text,
        }
        if self.blocks:
            body["blocks"] = list(self.blocks)
        return body


def cut_point(text: str, limit: int) -> int:
    """Where to cut `text` to at most `limit` characters: never inside markup or an escape, at a space or
    line break when one is near. Linear in the text."""
    if len(text) <= limit:
        return len(text)
    spans = [(m.start(), m.end()) for m in _UNCUTTABLE.finditer(text, 0, limit + 3001)]

    def inside(position: int) -> int | None:
        for start, end in spans:
            if start < position < end:
                return start
            if start >= position:
                break
        return None

    cut = limit
    start = inside(cut)
    if start is not None:
        cut = start
    for separator in ("\n", " "):
        found = text.rfind(separator, 0, cut)
        if found > limit // 2 and inside(found) is None:
            return found
    # A single piece of markup longer than the limit (a very long link) cannot be kept whole.
    return cut if cut > 0 else limit


def split_text(text: str, limit: int) -> list[str]:
    """The text in order, in parts of at most `limit` characters, cut only where cut_point allows."""
    parts = []
    while len(text) > limit:
        cut = cut_point(text, limit)
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip(" \n")
    parts.append(text)
    return parts


def _split_rich(line: tuple[rich.Element, ...], limit: int) -> list[list[rich.Element]]:
    """A rich line too long for one block, in order over several; a long text element is split (rich_text
    has no escapes to cut inside), other elements are kept whole."""
    parts: list[list[rich.Element]] = [[]]
    used = 0
    for element in line:
        pieces = [element]
        if element.get("type") == "text" and len(str(element["text"])) > limit:
            value = str(element["text"])
            pieces = [{**element, "text": value[i : i + limit]} for i in range(0, len(value), limit)]
        for piece in pieces:
            cost = rich.size([piece])
            if parts[-1] and used + cost > limit:
                parts.append([])
                used = 0
            parts[-1].append(piece)
            used += cost
    return parts


def _mrkdwn_block(text: str, code: bool = False) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": f"```\n{text}\n```" if code else text}}


def _rich_block(lines: list[list[rich.Element]]) -> dict[str, object]:
    return rich.block(rich.section(rich.line_elements(lines)))


def _kind(line: Line) -> str:
    return "code" if isinstance(line, CodeLine) else "text" if isinstance(line, str) else "rich"


def _blocks_of(lines: Sequence[Line]) -> list[tuple[dict[str, object], int, int]]:
    """(block, characters, lines it finishes) in order: consecutive lines of one kind share a block up to
    the section limit; a line too long for one block takes several, the last one counting it. A block
    with nothing to show (Slack refuses it) is an empty dict, its lines counted as shown."""
    out: list[tuple[dict[str, object], int, int]] = []
    group: list[Line] = []
    used = 0

    def flush() -> None:
        nonlocal group, used
        if not group:
            return
        if isinstance(group[0], str):
            joined = "\n".join(str(line) for line in group)
            block = _mrkdwn_block(joined, isinstance(group[0], CodeLine)) if joined.strip() else {}
        else:
            rich_lines = [list(line) for line in group if not isinstance(line, str)]
            block = _rich_block(rich_lines) if any(rich.size(line) for line in rich_lines) else {}
        out.append((block, used, len(group)))
        group, used = [], 0

    for line in lines:
        code = isinstance(line, CodeLine)
        limit = SECTION_LIMIT - (CODE_FENCE if code else 0)
        cost = len(line) if isinstance(line, str) else rich.size(line)
        if group and (_kind(group[0]) != _kind(line) or used + 1 + cost > limit):
            flush()
        if cost > limit and isinstance(line, str):
            parts = split_text(line, limit)
            out.extend((_mrkdwn_block(part, code), len(part), 0) for part in parts[:-1])
            line = CodeLine(parts[-1]) if code else parts[-1]
            cost = len(line)
        elif cost > limit and not isinstance(line, str):
            rich_parts = _split_rich(line, limit)
            out.extend((_rich_block([part]), rich.size(part), 0) for part in rich_parts[:-1])
            line = tuple(rich_parts[-1])
            cost = rich.size(line)
        used += cost + (1 if group else 0)
        group.append(line)
    flush()
    return out


def more_line(count: int) -> str:
    return f"…and {count} more line{'s' if count != 1 else ''} (a reply to a command is kept short)."


def fallback_text(lines: Sequence[Line]) -> str:
    text = "\n".join(
        line if isinstance(line, str) else escape_mrkdwn("".join(rich.shown(e) for e in line))
        for line in lines
    )
    return text[: cut_point(text, FALLBACK_LIMIT)]


def build_reply(lines: Sequence[Line], *, text: str | None = None, in_channel: bool = False) -> Reply:
    """Every reply goes through here. `text` is the notification text (the first lines when omitted)."""
    blocks: list[dict[str, object]] = []
    used = shown_lines = 0
    candidates = _blocks_of(lines)
    for number, (block, chars, finished) in enumerate(candidates):
        last = number == len(candidates) - 1
        room_blocks = MAX_BLOCKS if last else MAX_BLOCKS - 1  # one kept for the "…and N more" line
        room_text = REPLY_TEXT_LIMIT if last else REPLY_TEXT_LIMIT - 200
        if len(blocks) + 1 > room_blocks or used + chars > room_text:
            break
        if block:
            blocks.append(block)
        used += chars
        shown_lines += finished
    else:
        return Reply(text=text or fallback_text(lines), blocks=tuple(blocks), in_channel=in_channel)
    left = len(lines) - shown_lines
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more_line(left)}]})
    return Reply(text=text or fallback_text(lines[:shown_lines]), blocks=tuple(blocks), in_channel=in_channel)
