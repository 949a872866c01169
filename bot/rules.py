"""Compiles channel keyword rules and matches feed items against them.

Pure (stdlib only, no I/O) so it can be tested exhaustively and replaced by another engine behind this API.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from bot.model import ChannelMatch, ChannelRule, Item, RuleVerdict

if TYPE_CHECKING:
    from bot.query import Node as QueryNode

__all__ = [
    "Keyword",
    "RuleMatcher",
    "compile_keyword",
    "highlight_spans",
    "match_keywords",
    "normalize",
]

# Mapped before NFKC as well as after it: NFKC turns "″" into two primes, which would otherwise become "''".
# ʼ (U+02BC) is a letter to Unicode, but writers and autocorrect use it as an apostrophe.
_APOSTROPHES = "‘’‚‛′ʼ"
_DOUBLE_QUOTES = "“”„‟″"
_DASHES = "‐‑‒–—―−﹘﹣－"  # "−" is a math symbol (Sm), so the Pd category check below would miss it
_CHAR_MAP: dict[str, str] = {
    **dict.fromkeys(_APOSTROPHES, "'"),
    **dict.fromkeys(_DOUBLE_QUOTES, '"'),
    **dict.fromkeys(_DASHES, "-"),
    # Casefolding "İ" gives "i" plus a combining dot, which no ASCII-typed keyword would ever match.
    "İ": "i",
    # A zero-width space separates words (it is how some CMSs mark break points), unlike the other
    # format characters, which are dropped below.
    "\u200b": " ",
}
_OUTER_QUOTES = '"' + _DOUBLE_QUOTES

# Scripts written without spaces between words: a keyword end in one of these is matched as a substring,
# because there is no word boundary to look for.
_NO_SPACE_SCRIPT_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3005, 0x3007),  # 々 〆 〇: ideographic iteration and number marks
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x3035),  # kana repeat marks
    (0x303B, 0x303C),  # 〻 〼
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA9E0, 0xA9FF),  # Myanmar extended-B
    (0xAA60, 0xAA7F),  # Myanmar extended-A
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x1B000, 0x1B16F),  # Kana supplement and extended
    (0x20000, 0x323AF),  # CJK extensions B-H and compatibility supplement
)


def _in_no_space_script(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _NO_SPACE_SCRIPT_RANGES)


@lru_cache(maxsize=8192)
def _is_spaced_word_char(char: str) -> bool:
    """Whether `char` would continue a word of a space-separated script, so a keyword cannot end next to it.

    That is Python's `\\w` plus combining marks (left out of `\\w`, yet without them "भारत" would end
    inside "भारतीय", before its vowel sign), minus the scripts written without spaces, whose characters sit
    right against Latin names ("华为Huawei发布").
    """
    is_word = char.isalnum() or char == "_" or unicodedata.category(char)[0] == "M"
    return is_word and not _in_no_space_script(char)


@lru_cache(maxsize=8192)
def _fold_char(char: str) -> str:
    """One NFC character as it is compared: NFKC, casefolded, with quotes, dashes and spaces unified."""
    if char in _CHAR_MAP:
        return _CHAR_MAP[char]
    if char.isspace():
        return " "
    category = unicodedata.category(char)
    if category == "Cf":
        # Soft hyphens, zero-width joiners and bidi marks sit invisibly inside words in feed text.
        return ""
    if category == "Pd":
        return "-"
    # Casefolding can emit decomposed sequences ("ǰ" -> "j" + caron); recomposing keeps them one `\w` char.
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFKC", char).casefold())
    if folded == char:
        return folded
    # NFKC can produce characters that need mapping too: "﹘" becomes "—", "ﾠ" a space.
    return "".join(_fold_char(c) if c != char else c for c in folded)


def _nfc_segments(text: str) -> Iterator[tuple[str, int, int]]:
    """Yield (NFC text, start, end) for runs of `text` that NFC composes together, in order.

    Spans must map back to the caller's text, which may be decomposed (macOS and some CMSs emit NFD), so NFC
    is applied run by run rather than to the whole string at once.
    """
    if unicodedata.is_normalized("NFC", text):
        for index, char in enumerate(text):
            yield char, index, index + 1
        return
    start = 0
    for index in range(1, len(text) + 1):
        if index < len(text):
            segment, char = text[start:index], text[index]
            composes_with_previous = unicodedata.combining(char) != 0 or unicodedata.normalize(
                "NFC", segment + char
            ) != unicodedata.normalize("NFC", segment) + unicodedata.normalize("NFC", char)
            if composes_with_previous:
                continue
        yield unicodedata.normalize("NFC", text[start:index]), start, index
        start = index


class _FoldTable(dict[int, str]):
    """str.translate's table for _fold_char, filled as characters are met."""

    def __missing__(self, code: int) -> str:
        folded = self[code] = _fold_char(chr(code))
        return folded


_FOLD_TABLE = _FoldTable()


def _normalize_with_ends(text: str) -> tuple[str, list[int], list[int]]:
    # Fast path (nearly all feed text): already NFC, and every character folds to exactly one, so
    # str.translate does the work in C and each output character comes from the input at its position.
    if unicodedata.is_normalized("NFC", text) and all(len(_FOLD_TABLE[ord(c)]) == 1 for c in set(text)):
        size = len(text)
        return text.translate(_FOLD_TABLE), list(range(size)), list(range(1, size + 1))
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for segment, start, end in _nfc_segments(text):
        for char in segment:
            folded = _fold_char(char)
            pieces.append(folded)
            starts.extend([start] * len(folded))
            ends.extend([end] * len(folded))
    return "".join(pieces), starts, ends


def normalize(text: str) -> tuple[str, list[int]]:
    """Text as keywords are compared against it, and for each of its characters the index in `text` of the
    character it came from.

    NFC, then per character NFKC and casefold; curly quotes become straight ones, dash-like characters "-",
    any whitespace " ", and invisible format characters (soft hyphen, zero-width joiners) disappear.
    Accents are deliberately kept ("Zürich" != "Zurich"): folding them is language-dependent and would
    make short keywords match unrelated words.
    """
    normalized, starts, _ = _normalize_with_ends(text)
    return normalized, starts


@dataclass(frozen=True)
class Keyword:
    """A compiled keyword.

    `text` is the keyword as written, outer double quotes stripped. `pattern` matches its characters in
    normalised text (see `normalize`); whether an end must fall on a word boundary is kept in
    `bounded_start` / `bounded_end` and checked in Python by `spans`, because a stdlib regex class spelling
    out the CJK blocks and combining marks costs milliseconds per keyword to compile and slows every search.
    """

    text: str
    pattern: re.Pattern[str]
    bounded_start: bool
    bounded_end: bool

    def spans(self, normalized_text: str) -> Iterator[tuple[int, int]]:
        """Non-overlapping (start, end) occurrences in `normalized_text`, left to right."""
        position = 0
        while (match := self.pattern.search(normalized_text, position)) is not None:
            start, end = match.span()
            if self._on_boundaries(normalized_text, start, end):
                yield start, end
                position = end
            else:
                # The next real occurrence may overlap this candidate ("aa" in "aaa aa").
                position = start + 1

    def occurs_in(self, normalized_text: str) -> bool:
        return next(self.spans(normalized_text), None) is not None

    def _on_boundaries(self, text: str, start: int, end: int) -> bool:
        if self.bounded_start and start > 0 and _is_spaced_word_char(text[start - 1]):
            return False
        return not (self.bounded_end and end < len(text) and _is_spaced_word_char(text[end]))


_MatchKey = tuple[re.Pattern[str], bool, bool]


def _match_key(keyword: Keyword) -> _MatchKey:
    """What decides where a keyword matches; spellings that differ only in case or quotes share it."""
    return keyword.pattern, keyword.bounded_start, keyword.bounded_end


def _strip_outer_quotes(term: str) -> str:
    stripped = term.strip()
    if len(stripped) >= 2 and stripped[0] in _OUTER_QUOTES and stripped[-1] in _OUTER_QUOTES:
        return stripped[1:-1].strip()
    return stripped


@lru_cache(maxsize=4096)
def compile_keyword(term: str) -> Keyword:
    """Compile one rule keyword. Raises ValueError if it has no letter or digit, or misplaces `*`."""
    text = _strip_outer_quotes(term)
    is_prefix = text.endswith("*")
    body = text[:-1] if is_prefix else text
    if "*" in body:
        raise ValueError(f"'{term}': '*' is only allowed at the end of a word, as in 'sanction*'")
    normalized_body = normalize(body)[0]
    if not any(char.isalnum() for char in normalized_body):
        raise ValueError(f"'{term}' must contain at least one letter or digit")
    if is_prefix and body[-1].isspace():
        raise ValueError(f"'{term}': '*' must directly follow a word, as in 'sanction*'")

    words = normalized_body.split()
    pattern = r"\s+".join(re.escape(word) for word in words)
    bounded_start = _is_spaced_word_char(words[0][0])
    ends_in_spaced_word = _is_spaced_word_char(words[-1][-1])
    if is_prefix and ends_in_spaced_word:
        # `\w*` is greedy, so it always stops before a non-word character: no end boundary to check. In a
        # no-space script the keyword already matches as a prefix, and `*` would only stretch highlights.
        pattern += r"\w*"
    return Keyword(
        text=text,
        pattern=re.compile(pattern),
        bounded_start=bounded_start,
        bounded_end=ends_in_spaced_word and not is_prefix,
    )


def _compile_all(terms: Sequence[str]) -> tuple[Keyword, ...]:
    return tuple(compile_keyword(term) for term in terms)


def match_keywords(text: str, keywords: Sequence[str]) -> tuple[str, ...]:
    """The `keywords` (as given, in order, without repeats) that occur in `text`."""
    normalized = normalize(text)[0]
    found: list[str] = []
    for term in keywords:
        if term not in found and compile_keyword(term).occurs_in(normalized):
            found.append(term)
    return tuple(found)


def highlight_spans(text: str, keywords: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) spans of `text` covering every occurrence of any keyword, sorted; overlapping and
    touching spans are merged, since Slack cannot render two bold runs that touch."""
    normalized, starts, ends = _normalize_with_ends(text)
    spans = sorted(
        (starts[start], ends[end - 1])
        for keyword in _compile_all(keywords)
        for start, end in keyword.spans(normalized)
    )
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


@dataclass(frozen=True)
class _CompiledRule:
    rule: ChannelRule
    keywords: tuple[tuple[str, Keyword], ...]  # (as written in the rule, compiled)
    excludes: tuple[tuple[str, Keyword], ...]
    query: QueryNode | None = None


class RuleMatcher:
    """Matches items against a fixed list of channel rules, compiled once."""

    def __init__(self, rules: Sequence[ChannelRule]) -> None:
        # bot.query builds on this module's keywords, so it is imported here, not at the top.
        from bot.query import parse_query

        self.rules: tuple[ChannelRule, ...] = tuple(rules)
        self._compiled = tuple(
            _CompiledRule(
                rule=rule,
                keywords=tuple((term, compile_keyword(term)) for term in rule.keywords),
                excludes=tuple((term, compile_keyword(term)) for term in rule.exclude),
                query=parse_query(rule.query) if rule.query else None,
            )
            for rule in self.rules
        )
        # Channel order is fixed by the rules file, not by which entry happened to match an item, so
        # the same channel always posts in the same position.
        channels = dict.fromkeys(rule.channel for rule in self.rules)
        self._channel_order = {channel: position for position, channel in enumerate(channels)}
        self._index = _KeywordIndex(self._compiled)

    def explain_item(self, item: Item, *, ignore_feed_filter: bool = False) -> tuple[RuleVerdict, ...]:
        """One verdict per applicable rule, in rule order, that hit a keyword (or its query), with the
        exclude terms that would suppress it. Only the rules whose terms occur in the item are looked at
        (see _KeywordIndex), so the cost follows the item and its terms, not the number of rules."""
        fields = (normalize(item.title)[0], normalize(item.summary)[0])
        author = normalize(item.author)[0]
        candidates, present = self._index.candidates(fields, author)
        # The same keyword (same pattern) often appears in many rules: search each item field once. The
        # index has already found some terms in the title or summary.
        hits: dict[_MatchKey, bool] = dict.fromkeys(present, True)

        def occurs(keyword: Keyword) -> bool:
            key = _match_key(keyword)
            if key not in hits:
                # Fields are searched separately so that a phrase never runs from the title into the summary.
                hits[key] = any(keyword.occurs_in(field) for field in fields)
            return hits[key]

        from bot.query import ItemText, evaluate, matched_terms

        verdicts: list[RuleVerdict] = []
        item_text: ItemText | None = None
        for position in candidates:
            compiled = self._compiled[position]
            if not ignore_feed_filter and not compiled.rule.applies_to(item.feed_id):
                continue
            matched = _distinct_hits(compiled.keywords, occurs)
            if compiled.query is not None:
                item_text = item_text or ItemText(
                    item, {"title": fields[0], "summary": fields[1], "author": author}
                )
                if evaluate(compiled.query, item_text):
                    # The query's own terms that occur name the match; a query true without any (an OR
                    # with a negated branch) is named by its text.
                    named = matched_terms(compiled.query, item_text) or [compiled.rule.query or "query"]
                    matched = tuple(dict.fromkeys((*matched, *named)))
            excluded_by = _distinct_hits(compiled.excludes, occurs)
            if matched or excluded_by:
                verdicts.append(RuleVerdict(rule=compiled.rule, keywords=matched, excluded_by=excluded_by))
        return tuple(verdicts)

    def match_item(self, item: Item, *, ignore_feed_filter: bool = False) -> tuple[ChannelMatch, ...]:
        """One match per channel that any entry matched (a keyword hit, no exclude hit), in rules order."""
        by_channel: dict[str, tuple[list[str], set[_MatchKey | str], list[ChannelRule]]] = {}
        for verdict in self.explain_item(item, ignore_feed_filter=ignore_feed_filter):
            if not verdict.matched:
                continue
            keywords, seen, rules = by_channel.setdefault(verdict.rule.channel, ([], set(), []))
            rules.append(verdict.rule)
            for term in verdict.keywords:
                # "Huawei" in one entry and "HUAWEI" in another are one keyword to the reader: list it once.
                key = _term_key(term)
                if key not in seen:
                    seen.add(key)
                    keywords.append(term)
        return tuple(
            ChannelMatch(channel=channel, item=item, keywords=tuple(keywords), rules=tuple(rules))
            for channel, (keywords, _, rules) in sorted(
                by_channel.items(), key=lambda entry: self._channel_order[entry[0]]
            )
        )


def _term_key(term: str) -> _MatchKey | str:
    try:
        return _match_key(compile_keyword(term))
    except ValueError:  # a whole query's text, naming a match that no single term explains
        return term


class _KeywordIndex:
    """Every distinct term that can make a rule match (keywords, positive query terms), indexed by the
    first few characters of its normalised text, with the rules that use it. Finding the rules an item
    may match looks up only the places a term can start: the start of each word for the usual terms, and
    the characters that begin the others (those starting in a script written without spaces, or with a
    sign like "."). Then only the terms whose start was seen are checked, whatever the number of rules."""

    PREFIX = 8  # long enough that few unrelated terms share a start; at most 8 look-ups per word

    def __init__(self, compiled: Sequence[_CompiledRule]) -> None:
        from bot.query import ItemText, evaluate, terms_of

        self._keywords: dict[_MatchKey, Keyword] = {}
        self._rules_of: dict[_MatchKey, list[int]] = {}
        # Terms starting a word (looked up at word starts), and the others (looked up where their first
        # character occurs): start text -> terms.
        self._at_words: dict[str, list[_MatchKey]] = {}
        self._anywhere: dict[str, list[_MatchKey]] = {}
        always: list[int] = []
        empty = ItemText(Item(feed_id="", key="", link="", title=""))
        for position, rule in enumerate(compiled):
            # Only terms that can make a rule match put it forward; its excludes are checked afterwards.
            keywords = [keyword for _, keyword in rule.keywords]
            if rule.query is not None:
                keywords.extend(term.keyword for term, positive in terms_of(rule.query) if positive)
                if evaluate(rule.query, empty):
                    always.append(position)  # true with none of its terms present ("a OR NOT b")
            for keyword in keywords:
                key = _match_key(keyword)
                if key not in self._keywords:
                    self._keywords[key] = keyword
                    start = _literal_start(keyword)[: self.PREFIX]
                    table = self._at_words if keyword.bounded_start else self._anywhere
                    table.setdefault(start, []).append(key)
                users = self._rules_of.setdefault(key, [])
                if not users or users[-1] != position:
                    users.append(position)
        self._always = always
        self._word_lengths = sorted({len(start) for start in self._at_words})
        self._other_lengths = sorted({len(start) for start in self._anywhere})
        firsts = sorted({start[0] for start in self._anywhere if start})
        self._other_starts = re.compile("[" + "".join(re.escape(c) for c in firsts) + "]") if firsts else None

    def candidates(self, fields: Sequence[str], author: str) -> tuple[list[int], set[_MatchKey]]:
        """Positions of the rules that may match (those using a term that occurs in the title, summary or
        author), and the terms found in the title or summary."""
        found: set[_MatchKey] = set()
        for field in (*fields, author):
            for position in _word_starts(field):
                self._look_up(field, position, self._at_words, self._word_lengths, found)
            if self._other_starts is not None:
                for match in self._other_starts.finditer(field):
                    self._look_up(field, match.start(), self._anywhere, self._other_lengths, found)
        positions = set(self._always)
        present: set[_MatchKey] = set()
        for key in found:
            keyword = self._keywords[key]
            if any(keyword.occurs_in(field) for field in fields):
                present.add(key)
                positions.update(self._rules_of[key])
            elif author and keyword.occurs_in(author):  # for author: query terms
                positions.update(self._rules_of[key])
        return sorted(positions), present

    @staticmethod
    def _look_up(
        field: str,
        position: int,
        table: dict[str, list[_MatchKey]],
        lengths: list[int],
        found: set[_MatchKey],
    ) -> None:
        for length in lengths:
            keys = table.get(field[position : position + length])
            if keys:
                found.update(keys)


_WORD_RUN = re.compile(r"\w+")


def _word_starts(field: str) -> Iterator[int]:
    """Every place a word of a space-separated script starts: where a keyword with a word boundary at its
    start can begin. A run of `\\w` mixing scripts ("华为mate") holds word starts inside it too."""
    for match in _WORD_RUN.finditer(field):
        token, base = match.group(), match.start()
        if token.isascii():
            yield base
            continue
        previous_is_word = False
        for offset, char in enumerate(token):
            is_word = _is_spaced_word_char(char)
            if is_word and not previous_is_word:
                yield base + offset
            previous_is_word = is_word


def _literal_start(keyword: Keyword) -> str:
    """The characters every match of the keyword begins with: its first word, as normalised text."""
    body = keyword.text[:-1] if keyword.text.endswith("*") else keyword.text
    words = normalize(body)[0].split()
    return words[0] if words else ""


def _distinct_hits(
    keywords: tuple[tuple[str, Keyword], ...], occurs: Callable[[Keyword], bool]
) -> tuple[str, ...]:
    """The terms whose keyword occurs, as written; of several spellings of one keyword, the first."""
    found: dict[_MatchKey, str] = {}
    for term, keyword in keywords:
        key = _match_key(keyword)
        if key not in found and occurs(keyword):
            found[key] = term
    return tuple(found.values())
