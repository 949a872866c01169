"""The bounds on what a rule may ask of the matcher, in one place: the README's Limits table cites them.

Pure constants and the checks that name them; no I/O. A rule over a bound would make building the matcher,
or matching one item, cost more than every other rule together (issue 12).
"""

from __future__ import annotations

__all__ = [
    "MAX_CHANNEL_SUBSCRIPTIONS",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_DEPTH",
    "MAX_TERMS_PER_COMMAND",
    "MAX_TERM_CHARS",
    "MAX_TERM_POSITIONS",
    "MAX_USER_SUBSCRIPTIONS",
    "query_length_problem",
    "term_length_problem",
]

# Real rules' longest terms are company and programme names ("Semiconductor Manufacturing International",
# 41 characters); 100 leaves room and keeps one term from dominating an automaton build.
MAX_TERM_CHARS = 100
MAX_TERMS_PER_COMMAND = 20  # `/feeds subscribe a b c …`
MAX_CHANNEL_SUBSCRIPTIONS = 100  # terms and queries added from Slack to one channel (a DM is a channel)
MAX_USER_SUBSCRIPTIONS = 50  # added by one person, in every channel and their personal watch together
MAX_QUERY_CHARS = 500
# Parentheses and NOT (or `-`) nest at most this deep; deeper is never needed and costs recursion.
MAX_QUERY_DEPTH = 8
# Occurrences of one term in one field of one item kept for NEAR and for highlighting: past this, a
# later occurrence is not looked at (whether the term occurs at all is still decided on the whole text).
# Real items repeat a term a few dozen times at most; this bounds what a hostile item makes the bot hold.
MAX_TERM_POSITIONS = 10_000


def _shown(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def term_length_problem(term: str) -> str | None:
    """Why `term` is refused for its length, or None."""
    if len(term) <= MAX_TERM_CHARS:
        return None
    return f"'{_shown(term)}' is {len(term):,} characters; a term is at most {MAX_TERM_CHARS}"


def query_length_problem(query: str) -> str | None:
    """Why `query` is refused for its length, or None (its depth and terms are checked as it is parsed)."""
    if len(query) <= MAX_QUERY_CHARS:
        return None
    return f"the query is {len(query):,} characters; a query is at most {MAX_QUERY_CHARS}"
