"""Boolean queries, pure: parsing (with the column of any mistake) and evaluation against an item.

    ("export control*" OR "entity list" OR sanction*) AND (chip* OR semiconductor*) NOT opinion

Operators are uppercase (lowercase and/or/not are words). Precedence: NOT (also `-term`) binds tightest,
then AND (explicit, or implied between terms; `X NOT Y` is `X AND NOT Y`), then OR. NEAR/n joins two
terms found within n words of each other, in either order. A term is a keyword with the rules of
bot.rules (word, "quoted phrase", prefix*), optionally scoped to a field: title:, summary:, author:.
An unscoped term looks in the title and the summary, as keywords do.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice

from bot.limits import (
    MAX_QUERY_CHARS,
    MAX_QUERY_DEPTH,
    MAX_TERM_POSITIONS,
    query_length_problem,
    term_length_problem,
)
from bot.model import Item
from bot.rules import Keyword, TermScanner, compile_keyword, fold

FIELDS = ("title", "summary", "author")
_WORD = re.compile(r"\w+")


class QuerySyntaxError(ValueError):
    """`column` is 1-based, in the query text."""

    def __init__(self, column: int, message: str) -> None:
        super().__init__(f"column {column}: {message}")
        self.column = column
        self.message = message


# -- the tree --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    text: str  # as written, without the field prefix
    keyword: Keyword
    field: str | None = None  # None: title or summary


@dataclass(frozen=True)
class Near:
    left: Term
    right: Term
    distance: int


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


Node = Term | Near | Not | And | Or


def terms_of(node: Node, *, positive: bool = True) -> Iterator[tuple[Term, bool]]:
    """Every term, with whether it counts for the query (not under an odd number of NOTs)."""
    if isinstance(node, Term):
        yield node, positive
    elif isinstance(node, Near):
        yield node.left, positive
        yield node.right, positive
    elif isinstance(node, Not):
        yield from terms_of(node.child, positive=not positive)
    else:
        for child in node.children:
            yield from terms_of(child, positive=positive)


# -- parsing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # ( ) AND OR NOT NEAR - TERM END
    text: str
    column: int
    distance: int = 0


_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<open>\()
      | (?P<close>\))
      | (?P<near>NEAR/(?P<distance>\d*))
      | (?P<op>(AND|OR|NOT)(?=[\s()"]|$))
      | (?P<minus>-(?=[^\s)]))
      | (?P<term>(?:(?:title|summary|author):)?(?:"[^"]*"?\*?|[^\s()"]+))
    """,
    re.VERBOSE,
)


def _tokens(text: str) -> list[_Token]:
    tokens = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # a stray quote: the term pattern takes everything else
            raise QuerySyntaxError(position + 1, f"unexpected '{text[position]}'")
        column = position + 1
        if match.group("open"):
            tokens.append(_Token("(", "(", column))
        elif match.group("close"):
            tokens.append(_Token(")", ")", column))
        elif match.group("near"):
            digits = match.group("distance")
            if not digits or int(digits) < 1:
                raise QuerySyntaxError(column, "expected a number of words after NEAR/, as in NEAR/5")
            tokens.append(_Token("NEAR", match.group(), column, int(digits)))
        elif match.group("op"):
            tokens.append(_Token(match.group("op"), match.group("op"), column))
        elif match.group("minus"):
            tokens.append(_Token("-", "-", column))
        elif match.group("term"):
            tokens.append(_Token("TERM", match.group("term"), column))
        position = match.end()
    tokens.append(_Token("END", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0
        self.depth = 0  # parentheses and NOTs open around the current token

    def deeper(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_QUERY_DEPTH:
            raise QuerySyntaxError(
                token.column,
                f"too deeply nested; a query is at most {MAX_QUERY_DEPTH} levels of parentheses and NOT deep",
            )

    @property
    def current(self) -> _Token:
        return self.tokens[self.position]

    def take(self) -> _Token:
        token = self.current
        self.position += 1
        return token

    def parse(self) -> Node:
        if self.current.kind == "END":
            raise QuerySyntaxError(1, "the query is empty")
        node = self.or_expr()
        if self.current.kind == ")":
            raise QuerySyntaxError(self.current.column, "')' without a matching '('")
        if self.current.kind != "END":
            raise QuerySyntaxError(self.current.column, f"unexpected '{self.current.text}'")
        return node

    def or_expr(self) -> Node:
        children = [self.and_expr()]
        while self.current.kind == "OR":
            self.take()
            children.append(self.and_expr(after="OR"))
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_expr(self, after: str | None = None) -> Node:
        children = [self.unary(after)]
        while self.current.kind in ("AND", "NOT", "-", "(", "TERM"):
            operator = "AND" if self.current.kind == "AND" else None
            if operator:
                self.take()
            children.append(self.unary(operator))
        return children[0] if len(children) == 1 else And(tuple(children))

    def unary(self, after: str | None = None) -> Node:
        token = self.current
        if token.kind in ("NOT", "-"):
            self.take()
            self.deeper(token)
            node = Not(self.unary(token.kind))
            self.depth -= 1
            return node
        return self.near(after)

    def near(self, after: str | None) -> Node:
        left = self.primary(after)
        if self.current.kind != "NEAR":
            return left
        operator = self.take()
        right = self.primary("NEAR")
        if not isinstance(left, Term) or not isinstance(right, Term):
            raise QuerySyntaxError(operator.column, "NEAR joins two terms, not groups in parentheses")
        return Near(left, right, operator.distance)

    def primary(self, after: str | None) -> Node:
        token = self.current
        if token.kind == "(":
            self.take()
            self.deeper(token)
            if self.current.kind == ")":
                raise QuerySyntaxError(self.current.column, "expected a term inside the parentheses")
            node = self.or_expr()
            if self.current.kind != ")":
                raise QuerySyntaxError(
                    self.current.column, f"expected ')' to close the '(' at column {token.column}"
                )
            self.take()
            self.depth -= 1
            return node
        if token.kind == "TERM":
            self.take()
            return _term(token)
        where = f" after {after}" if after else ""
        found = "the end of the query" if token.kind == "END" else f"'{token.text}'"
        raise QuerySyntaxError(token.column, f"expected a term{where}, found {found}")


def _term(token: _Token) -> Term:
    text, field = token.text, None
    prefix, colon, rest = text.partition(":")
    if colon and prefix in FIELDS:
        if not rest:
            raise QuerySyntaxError(token.column, f"expected a term after {prefix}:")
        text, field = rest, prefix
    if text.startswith('"') and not (len(text) > 1 and text.rstrip("*").endswith('"')):
        raise QuerySyntaxError(token.column, "this quote is not closed")
    if text.startswith('"') and text.endswith("*"):  # "export control"* is the phrase with a prefix end
        text = text[:-1].rstrip('"') + '*"'
    too_long = term_length_problem(text.strip('"*'))
    if too_long:
        raise QuerySyntaxError(token.column, too_long)
    try:
        keyword = compile_keyword(text)
    except ValueError as e:
        raise QuerySyntaxError(token.column, str(e)) from e
    return Term(text, keyword, field)


@lru_cache(maxsize=4096)
def parse_query(text: str) -> Node:
    """Raises QuerySyntaxError (with the column) for a malformed query, one without a positive term, or one
    over a bound of bot.limits (its length, depth, or a term's length)."""
    too_long = query_length_problem(text)
    if too_long:
        raise QuerySyntaxError(MAX_QUERY_CHARS + 1, too_long)
    node = _Parser(text).parse()
    if not any(positive for _, positive in terms_of(node)):
        raise QuerySyntaxError(
            1, "the query needs at least one term that is not negated (NOT x alone matches nearly everything)"
        )
    return node


# -- evaluation ------------------------------------------------------------------------------------------


class ItemText:
    """An item's fields, normalised once, with each word's start for NEAR."""

    def __init__(self, item: Item, normalized: dict[str, str] | None = None) -> None:
        # `normalized`: fields the caller has normalised already (matching does, for its index).
        self.fields = normalized or {name: fold(getattr(item, name)) for name in FIELDS}
        self._word_starts: dict[str, list[int]] = {}

    def fields_for(self, term: Term) -> tuple[str, ...]:
        return (term.field,) if term.field else ("title", "summary")

    def occurs(self, term: Term) -> bool:
        return any(term.keyword.occurs_in(self.fields[name]) for name in self.fields_for(term))

    def word_spans(self, term: Term, field: str) -> list[tuple[int, int]]:
        """(first word, last word) indices of the term's first MAX_TERM_POSITIONS occurrences in the field,
        left to right: both indices never decrease, since occurrences do not overlap."""
        starts = self._word_starts.get(field)
        if starts is None:
            starts = self._word_starts[field] = [m.start() for m in _WORD.finditer(self.fields[field])]
        spans = []
        for start, end in islice(term.keyword.spans(self.fields[field]), MAX_TERM_POSITIONS):
            first = max(bisect.bisect_right(starts, start) - 1, 0)
            last = max(bisect.bisect_right(starts, max(end - 1, start)) - 1, 0)
            spans.append((first, last))
        return spans


class ScannedItem(ItemText):
    """An item whose fields a rule set's TermScanner has already searched for every term of every rule:
    whether a term occurs is then a set lookup, not a search."""

    def __init__(self, item: Item, scanner: TermScanner) -> None:
        super().__init__(item, {name: fold(getattr(item, name)) for name in FIELDS})
        self.term_id = scanner.term_id
        self.found = {name: scanner.find(text) for name, text in self.fields.items()}
        self.in_text = self.found[ANY_TEXT] = self.found["title"] | self.found["summary"]

    def occurs(self, term: Term) -> bool:
        return self.term_id(term.keyword) in self.found[term.field or ANY_TEXT]


ANY_TEXT = ""  # ScannedItem.found's key for the title and summary together, where unscoped terms look

Predicate = Callable[[ScannedItem], bool]


def compile_query(node: Node, term_id: Callable[[Keyword], int]) -> Predicate:
    """`evaluate` for a ScannedItem, with each term's id looked up once, here, rather than per item: a
    rule set with thousands of queries evaluates each in a few set lookups."""
    if isinstance(node, Term):
        found_in, term = node.field or ANY_TEXT, term_id(node.keyword)
        return lambda text: term in text.found[found_in]
    if isinstance(node, Near):
        left, right = compile_query(node.left, term_id), compile_query(node.right, term_id)
        return lambda text: left(text) and right(text) and _near(node, text)
    if isinstance(node, Not):
        child = compile_query(node.child, term_id)
        return lambda text: not child(text)
    children = [compile_query(child, term_id) for child in node.children]
    if isinstance(node, And):
        return lambda text: all(child(text) for child in children)
    return lambda text: any(child(text) for child in children)


def evaluate(node: Node, text: ItemText) -> bool:
    if isinstance(node, Term):
        return text.occurs(node)
    if isinstance(node, Near):
        return _near(node, text)
    if isinstance(node, Not):
        return not evaluate(node.child, text)
    if isinstance(node, And):
        return all(evaluate(child, text) for child in node.children)
    return any(evaluate(child, text) for child in node.children)


def _near(node: Near, text: ItemText) -> bool:
    """Both terms in one field, the gap between them (last word of one to first of the other) at most
    `distance` words: adjacent words are 1 apart. Linear in the terms' occurrences: a hostile item
    repeating both terms thousands of times must not cost every pair of them."""
    if not (text.occurs(node.left) and text.occurs(node.right)):
        return False  # the usual answer, found without locating words
    shared = [f for f in text.fields_for(node.left) if f in text.fields_for(node.right)]
    for field in shared:
        lefts, rights = text.word_spans(node.left, field), text.word_spans(node.right, field)
        if _follows_within(lefts, rights, node.distance) or _follows_within(rights, lefts, node.distance):
            return True
    return False


def _follows_within(
    firsts: Sequence[tuple[int, int]], seconds: Sequence[tuple[int, int]], distance: int
) -> bool:
    """Whether some span of `seconds` starts 1 to `distance` words after a span of `firsts` ends.

    Both lists run left to right, so one merge pass does: for each second span, the first spans ending
    before it are a growing prefix, and the last of them is the closest.
    """
    ended = 0  # how many of `firsts` end before the current second span starts
    for second_first, _ in seconds:
        while ended < len(firsts) and firsts[ended][1] < second_first:
            ended += 1
        if ended and second_first - firsts[ended - 1][1] <= distance:
            return True
    return False


def required_terms(node: Node) -> frozenset[Term]:
    """Terms that occur (each in its field) whenever the query is true: the engine skips the query for
    an item lacking one of them."""
    if isinstance(node, Term):
        return frozenset([node])
    if isinstance(node, Near):
        return frozenset([node.left, node.right])
    if isinstance(node, Not):
        return frozenset()
    children = [required_terms(child) for child in node.children]
    if isinstance(node, And):
        return frozenset().union(*children)
    return frozenset.intersection(*children)


def matched_terms(node: Node, text: ItemText) -> list[str]:
    """The positive terms that occur in the item, as written (for the message's "matched" line)."""
    return list(
        dict.fromkeys(term.text for term, positive in terms_of(node) if positive and text.occurs(term))
    )


def matches(query: str, item: Item) -> bool:
    return evaluate(parse_query(query), ItemText(item))
