"""Matching 1,000 real-shaped items against 10, 1,000 and 10,000 rules: the indexed RuleMatcher against a
naive loop that tries every rule's keywords on every item, in the same run."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

from bot.model import ChannelRule, Item
from bot.parse import parse_feed
from bot.rules import RuleMatcher, compile_keyword, fold

SAMPLE = Path(__file__).resolve().parent.parent / "bot" / "sample" / "scmp-semiconductors.xml"


def real_shaped_items(count: int) -> list[Item]:
    """The sample feed's items, recombined (titles and summaries shuffled across items) up to `count`."""
    items = list(parse_feed(SAMPLE.read_bytes(), "scmp").items)
    rng = random.Random(7)
    out = []
    for n in range(count):
        a, b = rng.choice(items), rng.choice(items)
        out.append(
            Item(feed_id="scmp", key=f"k{n}", link=f"https://e.com/{n}", title=a.title, summary=b.summary)
        )
    return out


def rules_like_teams_write(count: int, items: list[Item], feed_share: float = 0.05) -> list[ChannelRule]:
    """Rules as a bot serving many teams holds them: one to three keywords each, mostly names and topics
    that a given item does not mention (drawn from a large made-up vocabulary), some (`feed_share` of the
    keywords, at most 5%) from the feed's own vocabulary (so items do match), some phrases and prefixes,
    a few excludes and NEAR queries."""
    words = sorted(
        {w for item in items[:50] for w in re.findall(r"[A-Za-z]{5,}", item.title + " " + item.summary)}
    )
    rng = random.Random(11)
    made_up = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 10)))
        for _ in range(20000)
    ]
    rules = []
    for n in range(count):
        keywords = []
        for _ in range(rng.randint(1, 3)):
            roll = rng.random()
            if roll < 0.05:
                keywords.append(rng.choice(words) if roll < feed_share else rng.choice(made_up))
            elif roll < 0.10:
                keywords.append(rng.choice(made_up)[:5] + "*")
            elif roll < 0.20:
                keywords.append(f"{rng.choice(made_up)} {rng.choice(words)}")
            else:
                keywords.append(rng.choice(made_up))
        exclude = (rng.choice(words),) if rng.random() < 0.1 else ()
        query = f"{rng.choice(words)} NEAR/5 {rng.choice(made_up)[:4]}*" if rng.random() < 0.05 else None
        rules.append(ChannelRule(f"C{n:05d}", tuple(keywords), exclude, query=query))
    return rules


class NaiveMatcher:
    """The baseline: every rule's keywords compiled once, then tried on every item one regex after
    another (keyword rules only; queries are the engine's extra)."""

    def __init__(self, rules: list[ChannelRule]) -> None:
        self.rules = [
            (
                rule.channel,
                [compile_keyword(k) for k in rule.keywords],
                [compile_keyword(k) for k in rule.exclude],
            )
            for rule in rules
        ]

    def channels(self, item: Item) -> set[str]:
        fields = (fold(item.title), fold(item.summary))  # the same fast normalisation as the engine
        return {
            channel
            for channel, keywords, excludes in self.rules
            if any(k.occurs_in(f) for k in keywords for f in fields)
            and not any(k.occurs_in(f) for k in excludes for f in fields)
        }


class _ChunkTimer:
    """Seconds per item for a function over items. This machine's speed drifts for seconds at a time
    (shared cores), so the items are timed in small chunks, each chunk once per round, with the rounds
    of the engine and of the naive loop taken in turn across the whole run; each chunk's best time is
    kept, since noise only ever adds time (as timeit does)."""

    def __init__(self, function, items: list[Item], chunk: int) -> None:
        self.function = function
        self.chunks = [items[start : start + chunk] for start in range(0, len(items), chunk)]
        self.best = [float("inf")] * len(self.chunks)
        self.items = len(items)

    def round(self) -> None:
        for index, part in enumerate(self.chunks):
            started = time.perf_counter()
            for item in part:
                self.function(item)
            self.best[index] = min(self.best[index], time.perf_counter() - started)

    @property
    def per_item(self) -> float:
        return sum(self.best) / self.items


ROUNDS = 9


def run(*, quick: bool = False) -> None:
    items = real_shaped_items(200 if quick else 1000)
    title = f"## Matching {len(items)} items (best of {ROUNDS} rounds; naive on 50 items at 10,000 rules)"
    print(title)
    print()
    print("| rules | alerts/item | engine µs/item | naive µs/item | naive / engine |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    cases = [(10, 0.05), (100, 0.05), (1000, 0.05)] if quick else [(10, 0.05), (1000, 0.05), (10000, 0.05)]
    # The same number of rules, fewer of them about this feed: what the item's terms cost, not the rules.
    cases.append((cases[-1][0], 0.005))
    for count, feed_share in cases:
        rules = rules_like_teams_write(count, items, feed_share)
        keyword_rules = [r for r in rules if r.query is None]
        matcher = RuleMatcher(rules)
        keyword_matcher = RuleMatcher(keyword_rules)
        # Same answers on the keyword rules, before any timing.
        naive_matcher = NaiveMatcher(keyword_rules)
        for item in items[:50]:
            assert {m.channel for m in keyword_matcher.match_item(item)} == naive_matcher.channels(item)
        alerts = sum(len(matcher.match_item(item)) for item in items) / len(items)
        engine = _ChunkTimer(matcher.match_item, items, chunk=50)
        big = count >= 10000
        naive = _ChunkTimer(naive_matcher.channels, items[:50] if big else items, chunk=2 if big else 50)
        for _ in range(ROUNDS):
            engine.round()
            naive.round()
        engine_us, naive_us = engine.per_item * 1e6, naive.per_item * 1e6
        ratio = naive_us / engine_us
        label = f"{count:,}" + (f" ({feed_share:.1%} feed words)" if feed_share != 0.05 else "")
        print(f"| {label} | {alerts:.1f} | {engine_us:,.0f} | {naive_us:,.0f} | {ratio:,.1f}x |")
    print()
