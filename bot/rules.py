"""Compiles channel keyword rules and matches feed items against them.

Pure (stdlib only, no I/O) so it can be tested exhaustively and replaced by another engine behind this API.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby, islice
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple

import ahocorasick_rs

from bot.limits import MAX_TERM_POSITIONS
from bot.model import ChannelMatch, ChannelRule, Item, RuleVerdict
from bot.words import MARK, SPACED_WORD_CHAR, is_spaced_word_char, mark_words, word_end

if TYPE_CHECKING:
    from bot.query import Predicate, ScannedItem

__all__ = [
    "Keyword",
    "RuleMatcher",
    "compile_keyword",
    "fold",
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


_NON_ASCII = re.compile("[^\x00-\x7f]")
_ASCII_SPACES_BUT_SPACE = re.compile("[\t\n\x0b\x0c\r\x1c-\x1f]")


def fold(text: str) -> str:
    """`normalize(text)[0]` without the map back to `text`: what matching compares against, made fast.

    Feed text is nearly always NFC and mostly ASCII, so ASCII letters are lowered in C (through bytes,
    whose lower() leaves other characters alone) and only the few other characters go through the
    per-character fold; tests check it agrees with `normalize` on any text.
    """
    if text.isascii():
        folded = text.lower()
    elif unicodedata.is_normalized("NFC", text):
        lowered = text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")
        folded = _NON_ASCII.sub(lambda match: _FOLD_TABLE[ord(match.group())], lowered)
    else:
        return _normalize_with_ends(text)[0]
    if not folded.isprintable():  # tabs, newlines and other ASCII spaces become " "
        folded = _ASCII_SPACES_BUT_SPACE.sub(" ", folded)
    return folded


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
            elif self.bounded_start:
                # A real occurrence starts a word, so none starts before this candidate's word ends: one
                # search a word, not a character, for "aa" in "aaaa…".
                position = word_end(normalized_text, start)
            else:
                # The next real occurrence may overlap this candidate ("aa" in "aaa aa").
                position = start + 1

    def occurs_in(self, normalized_text: str) -> bool:
        return next(self.spans(normalized_text), None) is not None

    def _on_boundaries(self, text: str, start: int, end: int) -> bool:
        if self.bounded_start and start > 0 and is_spaced_word_char(text[start - 1]):
            return False
        return not (self.bounded_end and end < len(text) and is_spaced_word_char(text[end]))


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
    bounded_start = is_spaced_word_char(words[0][0])
    ends_in_spaced_word = is_spaced_word_char(words[-1][-1])
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
    """(start, end) spans of `text` covering the occurrences of any keyword (each keyword's first
    MAX_TERM_POSITIONS), sorted; overlapping and touching spans are merged, since Slack cannot render two
    bold runs that touch."""
    normalized, starts, ends = _normalize_with_ends(text)
    spans = sorted(
        (starts[start], ends[end - 1])
        for keyword in _compile_all(keywords)
        for start, end in islice(keyword.spans(normalized), MAX_TERM_POSITIONS)
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
    # (term id, as written in the rule): one spelling per term, the first, since "Huawei" and "HUAWEI"
    # are one keyword to the reader.
    keywords: tuple[tuple[int, str], ...]
    excludes: tuple[tuple[int, str], ...]
    query: Predicate | None = None
    # The query's positive terms, which name its matches: (term id, where it must occur, as written).
    query_terms: tuple[tuple[int, str, str], ...] = ()
    # For its hits, made once per rule: the excludes' term ids, and the feed filter as a set.
    exclude_ids: frozenset[int] = frozenset()
    feeds: frozenset[str] | None = None


class _Hit(NamedTuple):
    """A term that makes a rule match, unless an exclude or the feed filter says otherwise: ready-made
    for each (keyword, rule) when the rules are compiled, so matching an item mostly gathers them."""

    channel_order: int
    position: int  # of the rule
    place: int  # among the rule's terms: keywords first, then its query's
    channel: str
    term: int | str  # the term's id; a query true without any of its terms is named by its text
    text: str  # as written in the rule
    rule: ChannelRule
    excludes: frozenset[int]
    feeds: frozenset[str] | None
    # What the match of a channel matched by this hit alone lists: made once, not for every item.
    alone_keywords: tuple[str, ...]
    alone_rules: tuple[ChannelRule, ...]
    unconditional: bool  # neither excludes nor a feed filter: the hit always counts


class RuleMatcher:
    """Matches items against a fixed list of channel rules, compiled once.

    Every term of every rule (keywords, excludes, query terms) goes into one automaton (TermScanner), so
    finding which terms an item contains costs the same for 10 rules as for 10,000. Each found keyword
    then brings its ready-made hits, and only the queries needing nothing but found terms are evaluated:
    rules none of whose terms occurred are never looked at. Rebuilt, by building a new matcher, when the
    rules change.
    """

    def __init__(self, rules: Sequence[ChannelRule]) -> None:
        # bot.query builds on this module's keywords, so it is imported here, not at the top, and what
        # matching each item needs from it is kept on the matcher.
        from bot.query import (
            ANY_TEXT,
            ItemText,
            ScannedItem,
            compile_query,
            evaluate,
            parse_query,
            required_terms,
            terms_of,
        )

        self.rules: tuple[ChannelRule, ...] = tuple(rules)
        queries = [parse_query(rule.query) if rule.query else None for rule in self.rules]
        every_keyword = [
            *(compile_keyword(term) for rule in self.rules for term in (*rule.keywords, *rule.exclude)),
            *(term.keyword for query in queries if query is not None for term, _ in terms_of(query)),
        ]
        self._scanner = TermScanner(every_keyword)
        self._scanned_item = ScannedItem
        term_id = self._scanner.term_id

        def named(terms: Sequence[str]) -> tuple[tuple[int, str], ...]:
            first: dict[int, str] = {}
            for term in terms:
                first.setdefault(term_id(compile_keyword(term)), term)
            return tuple(first.items())

        # Channel order is fixed by the rules file, not by which entry happened to match an item, so
        # the same channel always posts in the same position.
        channels = dict.fromkeys(rule.channel for rule in self.rules)
        self._channel_order = {channel: position for position, channel in enumerate(channels)}

        compiled: list[_CompiledRule] = []
        self._hits_of: dict[int, list[_Hit]] = {}  # keyword's term id -> its hits
        # A query is looked at only for an item containing its anchor, one of the terms it cannot be true
        # without (the longest, as the rarest in text), and every other such term; a query needing none
        # is anchored on each of its terms.
        # term id -> (rule position, the terms its query needs)
        self._query_anchors: dict[int, list[tuple[int, frozenset[int]]]] = {}
        self._always: list[int] = []  # queries true without any of their terms ("a OR NOT b")
        nothing = ItemText(Item(feed_id="", key="", link="", title=""))
        for position, (rule, query) in enumerate(zip(self.rules, queries, strict=True)):
            query_terms = tuple(
                (term_id(term.keyword), term.field or ANY_TEXT, term.text)
                for term, positive in (terms_of(query) if query else ())
                if positive
            )
            excludes = named(rule.exclude)
            entry = _CompiledRule(
                rule,
                named(rule.keywords),
                excludes,
                compile_query(query, term_id) if query else None,
                query_terms,
                exclude_ids=frozenset(i for i, _ in excludes),
                feeds=None if rule.feeds is None else frozenset(rule.feeds),
            )
            compiled.append(entry)
            for place, (term, text) in enumerate(entry.keywords):
                self._hits_of.setdefault(term, []).append(self._hit(entry, position, place, term, text))
            if query is None:
                continue
            if evaluate(query, nothing):
                self._always.append(position)
                continue
            needed = sorted(required_terms(query), key=lambda term: -len(_literal(term.keyword)))
            needs = frozenset(term_id(term.keyword) for term in needed)
            anchors = [term_id(needed[0].keyword)] if needed else {i: None for i, _, _ in query_terms}
            for term in anchors:
                self._query_anchors.setdefault(term, []).append((position, needs))
        self._compiled = tuple(compiled)
        self._hit_terms = frozenset(self._hits_of)
        self._anchor_terms = frozenset(self._query_anchors)

    def _hit(self, entry: _CompiledRule, position: int, place: int, term: int | str, text: str) -> _Hit:
        rule, excludes, feeds = entry.rule, entry.exclude_ids, entry.feeds
        return _Hit(
            self._channel_order[rule.channel],
            position,
            place,
            rule.channel,
            term,
            text,
            rule,
            excludes,
            feeds,
            (text,),
            (rule,),
            not excludes and feeds is None,
        )

    def _query_hits(self, scan: ScannedItem) -> Iterator[_Hit]:
        """Hits of the queries true for the item, named by their positive terms that occur (after the
        rule's keywords); a query true without any is named by its text."""
        anywhere = scan.in_text | scan.found["author"] if scan.found["author"] else scan.in_text
        anchors = self._query_anchors
        candidates = {
            position
            for term in anywhere & self._anchor_terms
            for position, needs in anchors[term]
            if needs <= anywhere
        }
        for position in sorted(candidates.union(self._always)):
            entry = self._compiled[position]
            if entry.query is not None and entry.query(scan):
                after = len(entry.keywords)
                named: list[tuple[int | str, str]] = [
                    (i, text) for i, where, text in entry.query_terms if i in scan.found[where]
                ]
                query_text = entry.rule.query or "query"
                for place, (name, text) in enumerate(named or [(query_text, query_text)], start=after):
                    yield self._hit(entry, position, place, name, text)

    def explain_item(self, item: Item, *, ignore_feed_filter: bool = False) -> tuple[RuleVerdict, ...]:
        """One verdict per applicable rule, in rule order, that hit a keyword (or its query), with the
        exclude terms that would suppress it."""
        scan = self._scanned_item(item, self._scanner)
        by_rule: dict[int, list[_Hit]] = {}
        for term in scan.in_text:
            for hit in self._hits_of.get(term, ()):
                by_rule.setdefault(hit.position, []).append(hit)
        for hit in self._query_hits(scan):
            by_rule.setdefault(hit.position, []).append(hit)
        verdicts = []
        for position, hits in sorted(by_rule.items()):
            entry = self._compiled[position]
            if ignore_feed_filter or entry.rule.applies_to(item.feed_id):
                excluded = tuple(text for term, text in entry.excludes if term in scan.in_text)
                verdicts.append(RuleVerdict(entry.rule, keywords=_terms(hits), excluded_by=excluded))
        return tuple(verdicts)

    def match_item(self, item: Item, *, ignore_feed_filter: bool = False) -> tuple[ChannelMatch, ...]:
        """One match per channel that any entry matched (a keyword hit, no exclude hit), in rules order."""
        scan = self._scanned_item(item, self._scanner)
        found, feed_id, hits_of = scan.in_text, item.feed_id, self._hits_of
        hits: list[_Hit] = []
        for term in found & self._hit_terms:  # two sets: the smaller is iterated
            hits.extend(hits_of[term])
        if self._query_anchors or self._always:
            hits.extend(self._query_hits(scan))
        hits = [
            hit
            for hit in hits
            if hit.unconditional
            or (
                (not hit.excludes or hit.excludes.isdisjoint(found))
                and (hit.feeds is None or feed_id in hit.feeds or ignore_feed_filter)
            )
        ]
        # Hits compare as tuples: channel order, rule position, place. No two hits share a rule and a
        # place, so the comparison never reaches the later fields.
        hits.sort()
        if len(set(map(_channel_order, hits))) == len(hits):
            # Nearly always, even with 50 matches an item: each channel matched by one hit, whose match
            # is ready-made but for the item.
            return tuple([_new_match(hit[3], item, hit[9], hit[10]) for hit in hits])
        return tuple(
            _new_match(group[0].channel, item, group[0].alone_keywords, group[0].alone_rules)
            if len(group) == 1
            else _channel_match(item, group)
            for group in (list(group) for _, group in groupby(hits, _channel_order))
        )


_channel_order = itemgetter(0)


def _channel_match(item: Item, hits: list[_Hit]) -> ChannelMatch:
    rules = tuple({hit.position: hit.rule for hit in hits}.values())  # hits come in rule order
    return _new_match(hits[0].channel, item, _terms(hits), rules)


def _new_match(
    channel: str, item: Item, keywords: tuple[str, ...], rules: tuple[ChannelRule, ...]
) -> ChannelMatch:
    """ChannelMatch(channel, item, keywords, rules), made faster: a frozen dataclass's __init__ sets each
    field through object.__setattr__, a third of the cost of a match when 10,000 rules give an item 50
    of them. The fields are set at once instead (a test checks the two ways give equal matches)."""
    match = _new_object(ChannelMatch)
    _set_attribute(
        match, "__dict__", {"channel": channel, "item": item, "keywords": keywords, "rules": rules}
    )
    return match


_new_object, _set_attribute = object.__new__, object.__setattr__


def _terms(hits: list[_Hit]) -> tuple[str, ...]:
    """The terms as written, in the rules' order, each once (the same term in two entries is one)."""
    first: dict[int | str, str] = {}
    for hit in sorted(hits):
        first.setdefault(hit.term, hit.text)
    return tuple(first.values())


class TermScanner:
    """Finds which of a fixed set of terms occur in normalised text, in one pass whatever their number.

    The terms' literal text (words joined by single spaces, without a prefix's `*`) goes into an
    Aho-Corasick automaton (ahocorasick_rs, in Rust), which reports every occurrence of every literal,
    overlapping ones included; each is then kept or not by the term's word boundaries, exactly as
    Keyword.occurs_in decides (tests compare the two on random text).

    Hostile text can hold terms x characters of occurrences, none of them on a boundary ("aaaa…" against
    a, aa, aaa, …): so the text goes a window at a time, and once a window holds more occurrences than
    characters (prose has one every few dozen) the text is searched again with the edges of its words
    marked (see mark_words), against literals marked likewise, where an occurrence is on the term's
    boundaries by construction: only real occurrences come back, a window at a time.
    """

    def __init__(self, keywords: Iterable[Keyword]) -> None:
        self._ids: dict[_MatchKey, int] = {}
        literals: dict[str, list[tuple[int, bool, bool]]] = {}
        self._marked_literals: dict[str, list[int]] = {}
        for keyword in keywords:
            key = _match_key(keyword)
            if key in self._ids:
                continue
            term = self._ids[key] = len(self._ids)
            literals.setdefault(_literal(keyword), []).append(
                (term, keyword.bounded_start, keyword.bounded_end)
            )
            self._marked_literals.setdefault(_marked_literal(keyword), []).append(term)
        self._terms_at = [tuple(terms) for terms in literals.values()]
        self._whole_word = [
            terms[0][0] if len(terms) == 1 and terms[0][1] and terms[0][2] else None
            for terms in self._terms_at
        ]
        self._longest = max(map(len, literals), default=0)
        self._automaton = _automaton(list(literals)) if literals else None
        # For hostile text only, so built the first time one comes.
        self._marked_automaton: ahocorasick_rs.AhoCorasick | None = None

    def term_id(self, keyword: Keyword) -> int:
        return self._ids[_match_key(keyword)]

    def find(self, normalized_text: str) -> set[int]:
        """Ids of the terms occurring in `normalized_text` (see `fold`)."""
        if self._automaton is None or not normalized_text:
            return set()
        # A phrase's words are separated by any run of spaces (`\s+` in its pattern).
        text = _SPACE_RUN.sub(" ", normalized_text) if "  " in normalized_text else normalized_text
        try:
            return self._find(text)
        except UnicodeEncodeError:
            # A lone surrogate (from a broken numeric character reference) cannot go to Rust as UTF-8.
            # U+FFFD is no more a word character than a surrogate, so boundaries are unchanged.
            return self._find(_SURROGATE.sub("\ufffd", text))

    def _find(self, text: str) -> set[int]:
        assert self._automaton is not None
        search, everything = self._automaton.find_matches_as_indexes, len(self._ids)
        found: set[int] = set()
        # Padded, so that every occurrence has a character on each side (a space ends a word).
        padded = f" {text} "
        is_word, whole_word, terms_at = SPACED_WORD_CHAR, self._whole_word, self._terms_at
        # Windows overlap by the longest literal less one, so every occurrence lies whole in a window.
        overlap = self._longest - 1
        for offset in range(0, max(len(text) - overlap, 1), SCAN_WINDOW):
            window = (
                text[offset : offset + SCAN_WINDOW + overlap] if offset or len(text) > SCAN_WINDOW else text
            )
            occurrences = search(window, overlapping=True)
            if len(occurrences) > len(window):
                return found | self._find_marked(text)
            for literal, start, end in occurrences:
                before, after = padded[offset + start], padded[offset + end + 1]  # the characters around it
                term = whole_word[literal]
                if term is not None:  # most terms: the one term of its literal, bounded at both ends
                    if not (is_word[before] or is_word[after]):
                        found.add(term)
                    continue
                for term, bounded_start, bounded_end in terms_at[literal]:
                    if not ((bounded_start and is_word[before]) or (bounded_end and is_word[after])):
                        found.add(term)
            if len(found) == everything:
                break
        return found

    def _find_marked(self, text: str) -> set[int]:
        if self._marked_automaton is None:
            self._marked_automaton = _automaton(list(self._marked_literals))
        search, literals = self._marked_automaton.find_matches_as_indexes, set()
        terms_of = list(self._marked_literals.values())
        marked = mark_words(text)
        overlap = max(map(len, self._marked_literals)) - 1
        for offset in range(0, max(len(marked) - overlap, 1), SCAN_WINDOW):
            window = marked[offset : offset + SCAN_WINDOW + overlap]
            literals.update([literal for literal, _, _ in search(window, overlapping=True)])
            if len(literals) == len(terms_of):  # nothing left to look for ("a a a …" against "a", "a a", …)
                break
        return {term for literal in literals for term in terms_of[literal]}


def _automaton(literals: list[str]) -> ahocorasick_rs.AhoCorasick:
    # ahocorasick_rs picks a DFA for up to 100 literals, however long: one 20,000-character term took a
    # second to build, holding the GIL (issue 12, item 8). A contiguous NFA builds any set in
    # milliseconds; a DFA searches prose twice as fast, so it is kept where its build is bounded too.
    small = sum(map(len, literals)) <= _DFA_MAX_CHARACTERS
    implementation = (
        ahocorasick_rs.Implementation.DFA if small else ahocorasick_rs.Implementation.ContiguousNFA
    )
    return ahocorasick_rs.AhoCorasick(literals, implementation=implementation)


# Literals of at most this many characters in all build as a DFA in under 10 ms (2 ms at most for terms
# within the 100-character limit), measured on the worst shapes: one long run of a letter, CJK.
_DFA_MAX_CHARACTERS = 2000
# Characters searched at once: bounds the occurrences listed together (at most this many times the
# longest term's length, whatever the number of terms) at a negligible cost per window.
SCAN_WINDOW = 1024
_SPACE_RUN = re.compile(" {2,}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _marked_literal(keyword: Keyword) -> str:
    """The keyword's literal as mark_words marks text, keeping a mark at an end only where the keyword
    must not continue past it (a prefix's end does, so its closing mark goes)."""
    marked = mark_words(_literal(keyword))
    if not keyword.bounded_start and marked.startswith(MARK):
        marked = marked[1:]
    if not keyword.bounded_end and marked.endswith(MARK):
        marked = marked[:-1]
    return marked


def _literal(keyword: Keyword) -> str:
    """The text every match of the keyword consists of or, for a prefix, begins with: its normalised
    words, one space apart."""
    body = keyword.text[:-1] if keyword.text.endswith("*") else keyword.text
    return " ".join(fold(body).split())
