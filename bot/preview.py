"""`preview`: which channels would get which items, and what would be held back and why. Reads state,
never writes it; fetches without conditional headers so every item in the feed is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from bot.addresses import AddressPolicy
from bot.errors import FeedError, FetchError
from bot.model import FeedConfig, Item, RuleSet, RuleVerdict
from bot.parse import parse_feed
from bot.pipeline import Fetcher, newest_first, plan_alerts
from bot.rules import RuleMatcher
from bot.storage import TinyDBBackend
from bot.store import MemoryBackend, Store

ADHOC_FEED_ID = "preview"


@dataclass(frozen=True)
class ItemPreview:
    item: Item
    seen: bool
    posts: tuple[tuple[str, tuple[str, ...]], ...]  # (channel, keywords) that a run would post now
    held: tuple[tuple[str, str], ...]  # (channel, why it would not be posted)


@dataclass(frozen=True)
class FeedPreview:
    feed_id: str
    url: str
    title: str = ""
    error: str | None = None
    first_poll: bool = False
    adhoc: bool = False
    items: tuple[ItemPreview, ...] = ()
    total_items: int = 0
    notes: tuple[str, ...] = field(default=())


def snapshot_store(db_path: Path) -> Store:
    """A copy of the saved state in memory, so nothing the preview does can reach the files."""
    if not db_path.exists():
        return Store.in_memory()
    disk = TinyDBBackend(db_path, owner=False)
    memory = MemoryBackend()
    memory.tables = disk.load()
    memory.deliveries = disk.read_deliveries()
    return Store.in_memory(memory)


def _verdict_reason(verdict: RuleVerdict) -> str:
    where = f" ({verdict.rule.location})" if verdict.rule.location else ""
    return "excluded by " + ", ".join(verdict.excluded_by) + where


def preview_feed(
    feed: FeedConfig,
    rules: RuleSet,
    matcher: RuleMatcher,
    fetcher: Fetcher,
    store: Store,
    *,
    adhoc: bool = False,
) -> FeedPreview:
    try:
        redirects = AddressPolicy(allow_private=rules.settings.allow_private_feeds)
        fetched = fetcher.fetch(feed.url, redirect_policy=redirects)
        parsed = parse_feed(fetched.body, feed.id, headers=fetched.headers, url=fetched.url)
    except (FetchError, FeedError) as e:
        return FeedPreview(feed.id, feed.url, error=getattr(e, "reason", str(e)), adhoc=adhoc)

    first_poll = not adhoc and store.feed_state(feed.id) is None
    unseen_keys = {i.key for i in (parsed.items if adhoc else store.unseen(feed.id, parsed.items))}
    plan = plan_alerts(
        [i for i in parsed.items if i.key in unseen_keys],
        matcher,
        first_poll=first_poll,
        backfill=rules.settings.backfill,
        is_delivered=(lambda _c, _i: False) if adhoc else store.is_delivered,
        ignore_feed_filter=adhoc,
    )
    previews = []
    for item in newest_first(parsed.items):
        seen = item.key not in unseen_keys
        posts = tuple((m.channel, m.keywords) for m in plan.alerts if m.item.key == item.key)
        held = [(s.match.channel, s.reason) for s in plan.suppressed if s.match.item.key == item.key]
        for verdict in matcher.explain_item(item, ignore_feed_filter=adhoc):
            if verdict.excluded_by:
                held.append((verdict.rule.channel, _verdict_reason(verdict)))
        if seen:
            matched = matcher.match_item(item, ignore_feed_filter=adhoc)
            held.extend((m.channel, "already seen in an earlier poll") for m in matched)
        if posts or held:
            previews.append(ItemPreview(item, seen, posts, tuple(held)))
    notes = (parsed.warning,) if parsed.warning else ()
    return FeedPreview(
        feed.id,
        feed.url,
        title=parsed.title,
        first_poll=first_poll,
        adhoc=adhoc,
        items=tuple(previews),
        total_items=len(parsed.items),
        notes=notes,
    )


def preview_feeds(
    rules: RuleSet, fetcher: Fetcher, *, db_path: Path, adhoc_url: str | None = None
) -> list[FeedPreview]:
    store = snapshot_store(db_path)
    # State is keyed by channel ID: use the IDs the last run resolved '#name' channels to.
    ids = store.channel_ids()
    rules = replace(
        rules,
        channels=tuple(replace(r, channel=ids.get(r.channel.lower(), r.channel)) for r in rules.channels),
    )
    matcher = RuleMatcher(rules.channels)
    if adhoc_url:
        feed = FeedConfig(ADHOC_FEED_ID, adhoc_url, rules.settings.interval_seconds)
        return [preview_feed(feed, rules, matcher, fetcher, store, adhoc=True)]
    return [preview_feed(feed, rules, matcher, fetcher, store) for feed in rules.feeds]


def render_preview(previews: list[FeedPreview]) -> str:
    lines: list[str] = []
    would_post = held_back = 0
    for feed in previews:
        if feed.error:
            lines.append(f"{feed.feed_id} ({feed.url}): cannot preview: {feed.error}")
            lines.append("")
            continue
        mode = (
            "every rule, seen state ignored"
            if feed.adhoc
            else "first poll: backfill"
            if feed.first_poll
            else "new items"
        )
        lines.append(f"{feed.feed_id}: {feed.title or feed.url} — {feed.total_items} items ({mode})")
        lines.extend(f"  note: {note}" for note in feed.notes)
        if not feed.items:
            lines.append("  no item matches any rule")
        for preview in feed.items:
            item = preview.item
            when = item.published.strftime("%Y-%m-%d %H:%M") if item.published else "undated"
            lines.append(f"  {when}  {item.title or '(untitled)'}")
            for channel, keywords in preview.posts:
                lines.append(f"      post → {channel}  matched {', '.join(keywords)}")
                would_post += 1
            for channel, reason in preview.held:
                lines.append(f"      held   {channel}  {reason}")
                held_back += 1
        lines.append("")
    lines.append(f"{would_post} alert(s) would be posted, {held_back} held back. Nothing was changed.")
    return "\n".join(lines) + "\n"
