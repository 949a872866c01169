"""The query language: table-driven semantics, malformed queries with their column, and a property test
that the parser and evaluator agree with a simple reference evaluator on random queries and texts."""

from __future__ import annotations

import sys
from types import FrameType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import query as query_module
from bot.model import ChannelRule, Item
from bot.query import ItemText, Near, QuerySyntaxError, evaluate, matches, parse_query
from bot.rules import RuleMatcher


def item(title: str, summary: str = "", author: str = "") -> Item:
    return Item(feed_id="f", key="k", link="", title=title, summary=summary, author=author)


def engine_matches(query: str, item: Item) -> bool:
    """The same question asked of the rule engine, which evaluates queries over the terms its automaton
    found (beside another rule's terms) rather than by searching the item: both must answer alike."""
    rules = [ChannelRule("C0", ("unrelated",)), ChannelRule("C1", (), query=query)]
    return [match.channel for match in RuleMatcher(rules).match_item(item)] == ["C1"]


POLICY = '("export control*" OR "entity list" OR sanction*) AND (chip* OR semiconductor*) NOT opinion'


@pytest.mark.parametrize(
    ("query", "title", "summary", "expected"),
    [
        (POLICY, "US tightens export controls on chips", "", True),
        (POLICY, "Opinion: export controls on chips", "", False),
        (POLICY, "US adds firms to the entity list", "semiconductor makers hit", True),
        (POLICY, "Sanctions on oil", "", False),
        # precedence: NOT > AND > OR
        ("a OR b c", "b", "", False),  # a OR (b AND c)
        ("a OR b c", "a", "", True),
        ("a b OR c", "c", "", True),  # (a AND b) OR c
        ("a NOT b OR c", "a b c", "", True),  # (a AND NOT b) OR c
        ("a NOT b OR c", "a b", "", False),
        ("NOT a OR b", "c", "", True),  # (NOT a) OR b
        ("a AND NOT b", "a", "", True),
        ("a -b", "a b", "", False),
        ('a -"b c"', "a b c", "", False),
        ('a -"b c"', "a c b", "", True),
        ("a -(b OR c)", "a c", "", False),
        ("US-China", "US-China talks", "", True),
        ("(a OR b) c", "b c", "", True),
        ("(a OR b) c", "a", "", False),
        # operators are uppercase; lowercase words are terms
        ("war and peace", "war and peace", "", True),
        ("war and peace", "war peace", "", False),
        ("not", "this is not it", "", True),
        # phrases, wildcards, fields
        ('"scaling law"', "Huawei scaling law", "", True),
        ('"scaling law"', "law scaling", "", False),
        ("sanction*", "new sanctions", "", True),
        ("sanction*", "unsanctioned", "", False),
        ("title:Nexperia", "x", "Nexperia", False),
        ("summary:Nexperia", "x", "Nexperia", True),
        ("author:Cao", "x", "", False),
        # NEAR/n: within n words, either order, one field
        ("Huawei NEAR/3 chip*", "Huawei unveils AI chips", "", True),
        ("Huawei NEAR/3 chip*", "chips from Huawei", "", True),
        ("Huawei NEAR/2 chip*", "Huawei unveils new AI chips", "", False),
        ("Huawei NEAR/1 chip", "Huawei chip", "", True),
        ("Huawei NEAR/5 chip", "Huawei", "chip", False),  # not across fields
        # Unicode: the same normalisation as keywords
        ('"US-China"', "US–China talks", "", True),
        ("华为", "华为公司发布", "", True),
        ("Zürich", "Zurich", "", False),
    ],
)
def test_query_semantics(query: str, title: str, summary: str, expected: bool) -> None:
    assert matches(query, item(title, summary)) is expected
    assert engine_matches(query, item(title, summary)) is expected


def test_author_scope() -> None:
    assert matches("author:Cao", item("x", author="Ann Cao"))
    assert engine_matches("author:Cao", item("x", author="Ann Cao"))
    assert not engine_matches("author:Cao", item("Cao", author="Ann Lee"))


@pytest.mark.parametrize(
    ("query", "column", "message"),
    [
        ("", 1, "the query is empty"),
        ("NOT opinion", 1, "at least one term that is not negated"),
        ("-opinion", 1, "at least one term that is not negated"),
        ("a AND", 6, "expected a term after AND, found the end of the query"),
        ("a OR OR b", 6, "expected a term after OR, found 'OR'"),
        ("(a OR b", 8, "expected ')' to close the '(' at column 1"),
        ("a)", 2, "')' without a matching '('"),
        ("()", 2, "expected a term inside the parentheses"),
        ("a NEAR/ b", 3, "expected a number of words after NEAR/"),
        ("a NEAR/0 b", 3, "expected a number of words after NEAR/"),
        ("a NEAR/3 (b OR c)", 3, "NEAR joins two terms"),
        ('"open phrase', 1, "this quote is not closed"),
        ("title:", 1, "expected a term after title:"),
        ("a ch*ip", 3, "'*' is only allowed at the end of a word"),
    ],
)
def test_malformed_queries_name_the_column_and_what_was_expected(
    query: str, column: int, message: str
) -> None:
    with pytest.raises(QuerySyntaxError) as raised:
        parse_query(query)
    assert raised.value.column == column
    assert message in raised.value.message


# -- property: the engine agrees with a reference evaluator -------------------------------------------

WORDS = ["alpha", "beta", "gamma", "delta"]


def leaf() -> st.SearchStrategy:
    return st.sampled_from(WORDS).map(lambda w: ("term", w))


def trees() -> st.SearchStrategy:
    return st.recursive(
        leaf(),
        lambda children: st.one_of(
            st.tuples(st.just("not"), children),
            st.tuples(st.just("and"), st.lists(children, min_size=2, max_size=3), st.booleans()),
            st.tuples(st.just("or"), st.lists(children, min_size=2, max_size=3)),
            st.tuples(st.just("near"), st.sampled_from(WORDS), st.sampled_from(WORDS), st.integers(1, 3)),
        ),
        max_leaves=6,
    )


RANK = {"or": 0, "and": 1, "not": 2, "near": 3, "term": 3}


def render(node: tuple, parent: int = 0) -> str:
    """The tree as a query, with parentheses only where precedence needs them."""
    kind = node[0]
    if kind == "term":
        text = node[1]
    elif kind == "near":
        text = f"{node[1]} NEAR/{node[3]} {node[2]}"
    elif kind == "not":
        text = "NOT " + render(node[1], RANK["not"])
    elif kind == "and":
        joiner = " AND " if node[2] else " "
        text = joiner.join(render(child, RANK["and"] + 1) for child in node[1])
    else:
        text = " OR ".join(render(child, RANK["or"] + 1) for child in node[1])
    return f"({text})" if RANK[kind] < parent else text


def reference(node: tuple, words: list[str]) -> bool:
    kind = node[0]
    if kind == "term":
        return node[1] in words
    if kind == "near":
        a = [i for i, w in enumerate(words) if w == node[1]]
        b = [i for i, w in enumerate(words) if w == node[2]]
        return any(0 < abs(i - j) <= node[3] for i in a for j in b)
    if kind == "not":
        return not reference(node[1], words)
    if kind == "and":
        return all(reference(child, words) for child in node[1])
    return any(reference(child, words) for child in node[1])


def positive(node: tuple, negated: bool = False) -> bool:
    kind = node[0]
    if kind in ("term", "near"):
        return not negated
    if kind == "not":
        return positive(node[1], not negated)
    return any(positive(child, negated) for child in node[1])


@settings(max_examples=300, deadline=None)
@given(trees(), st.lists(st.sampled_from([*WORDS, "other"]), max_size=8))
def test_the_engine_agrees_with_a_reference_evaluator(tree: tuple, words: list[str]) -> None:
    query = render(tree)
    if not positive(tree):
        with pytest.raises(QuerySyntaxError):
            parse_query(query)
        return
    assert matches(query, item(" ".join(words))) is reference(tree, words), query
    assert engine_matches(query, item(" ".join(words))) is reference(tree, words), query


# -- NEAR over many occurrences (issue 12, item 3) --------------------------------------------------------


def every_pair_near(query: str, text: ItemText) -> bool:
    """NEAR as first written: every occurrence of one term against every occurrence of the other."""
    node = parse_query(query)
    assert isinstance(node, Near)
    for field in ("title", "summary"):
        for a_first, a_last in text.word_spans(node.left, field):
            for b_first, b_last in text.word_spans(node.right, field):
                gap = b_first - a_last if b_first > a_last else a_first - b_last
                if 0 < gap <= node.distance:
                    return True
    return False


NEAR_TERMS = ["huawei", "chip*", '"ai chip"', "ai", '"huawei ai"']


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(NEAR_TERMS),
    st.sampled_from(NEAR_TERMS),
    st.integers(min_value=1, max_value=4),
    st.lists(st.sampled_from(["huawei", "chip", "chips", "ai", "x", "-", "AI-chip"]), max_size=40),
)
def test_near_agrees_with_comparing_every_pair(
    left: str, right: str, distance: int, words: list[str]
) -> None:
    query = f"{left} NEAR/{distance} {right}"
    text = ItemText(item(" ".join(words[:5]), " ".join(words)))
    assert evaluate(parse_query(query), text) is every_pair_near(query, text), (query, words)


def lines_run_in_query_module(query: str, summary: str) -> int:
    """Work done evaluating `query` on an item, counted as lines of bot.query executed: unlike a clock,
    the count does not depend on the machine's load."""
    node, text = parse_query(query), ItemText(item("", summary))
    count = 0

    def trace(frame: FrameType, event: str, arg: object) -> object:
        nonlocal count
        if frame.f_code.co_filename != query_module.__file__:
            return None
        if event == "line":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        assert evaluate(node, text) is False
    finally:
        sys.settrace(None)
    return count


def test_near_over_a_summary_repeating_both_terms_costs_work_in_proportion_to_it() -> None:
    """The issue's summary, "huawei " * 40000 + … + "chip " * 40000, made every pair of occurrences be
    compared (50 s under the delivery lock). Twice the occurrences must cost about twice the work."""

    def summary(count: int) -> str:
        return "huawei " * count + "and the story goes on and on " + "chip " * count

    small, double = (lines_run_in_query_module("huawei NEAR/3 chip*", summary(n)) for n in (300, 600))
    assert double < 2.2 * small, (small, double)
