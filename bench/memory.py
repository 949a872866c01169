"""Peak memory of a bot holding 10,000 rules and 100,000 stored keys, each measured in a fresh process
(`python -m bench.memory <rules> <keys>` prints its peak RSS) so that one figure cannot inherit another's
heap; the interpreter with the bot's modules imported is measured the same way, for the baseline.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def peak_rss_mib() -> float:
    """This process's peak RSS. Linux's VmHWM, where there is one: getrusage's ru_maxrss in a child
    starts from its parent's peak, which would hide a smaller figure."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def load(rule_count: int, key_count: int, folder: Path) -> dict[str, float]:
    """In this process: the rules compiled into a matcher and the keys stored, then reopened from disk
    (a restart), with one item matched and one lookup done, as the running bot holds them."""
    from bench.matching import real_shaped_items, rules_like_teams_write
    from bot.rules import RuleMatcher
    from bot.storage import open_store
    from bot.store import CycleChange

    imported = peak_rss_mib()
    items = real_shaped_items(50)
    matcher = RuleMatcher(rules_like_teams_write(rule_count, items)) if rule_count else None
    if key_count:
        store = open_store(folder / "state.json")
        per_feed = 1000
        for feed in range(max(1, key_count // per_feed)):
            keys = [f"https://www.example.com/news/{feed}/article-{n}?id={n}" for n in range(per_feed)]
            store.commit_cycle(CycleChange(f"feed-{feed}", datetime.now(UTC), keys_in_feed=keys))
        store.close()
        store = open_store(folder / "state.json")  # as after a restart: everything read back
        assert store.seen_count("feed-0") == per_feed
    if matcher is not None:
        matcher.match_item(items[0])
    return {"imported": imported, "peak": peak_rss_mib()}


def measure(rule_count: int, key_count: int) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.memory", str(rule_count), str(key_count)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output)


def run(*, quick: bool = False) -> None:
    rules, keys = (1_000, 10_000) if quick else (10_000, 100_000)
    print(f"## Peak memory (RSS, each in a fresh process) with {rules:,} rules and {keys:,} stored keys")
    print()
    print("| holding | peak MiB | above the bare bot |")
    print("| --- | ---: | ---: |")
    bare = measure(0, 0)["peak"]
    for label, rule_count, key_count in (
        ("the bot's modules, nothing loaded", 0, 0),
        (f"{rules:,} rules", rules, 0),
        (f"{keys:,} stored keys", 0, keys),
        (f"{rules:,} rules and {keys:,} stored keys", rules, keys),
    ):
        peak = measure(rule_count, key_count)["peak"] if rule_count or key_count else bare
        print(f"| {label} | {peak:.0f} | {peak - bare:.0f} |")
    print()


def main() -> None:
    rule_count, key_count = int(sys.argv[1]), int(sys.argv[2])
    import bot.app  # noqa: F401  (the bot's modules, as `python -m bot run` has them)

    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(load(rule_count, key_count, Path(folder))))


if __name__ == "__main__":
    main()
