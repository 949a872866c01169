"""The pure core stays pure: parsing, matching, rendering, planning and the store's rules import no
Slack, HTTP, storage or scheduling library, so they are tested without sockets or files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parent.parent / "bot"
PURE = [
    "model",
    "errors",
    "parse",
    "rules",
    "blocks",
    "pipeline",
    "store",
    "commands",
    "service",
    "home",
    "oncall",
    "query",
    "recovery",
    "addresses",
    "health",
    "privacy",
    "intake",
    "inflight",
    "limits",
    "words",
    "yaml_bounds",
    "richtext",
    "replies",
    "notices",
    "feed_limits",
]
ADAPTER_LIBRARIES = {
    "slack_sdk",
    "slack_bolt",
    "tinydb",
    "apscheduler",
    "httpx",
    "requests",
    "urllib3",
    "socket",
    "waitress",
}
ADAPTER_MODULES = {
    "bot.fetch",
    "bot.slack",
    "bot.storage",
    "bot.app",
    "bot.cli",
    "bot.slackapp",
    "bot.web",
    "bot.membership",
    "bot.slowwork",
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_adapter(module: str) -> None:
    imported = imported_modules(BOT / f"{module}.py")
    assert not {name for name in imported if name.split(".")[0] in ADAPTER_LIBRARIES}
    assert not imported & ADAPTER_MODULES


def test_only_config_reads_the_environment() -> None:
    readers = [p.name for p in BOT.glob("*.py") if "os.environ" in p.read_text() or "getenv" in p.read_text()]
    assert readers == ["config.py"]
