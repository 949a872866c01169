"""manifest.yml creates the app in one step: every Web API method the bot calls is covered by a scope it
asks for, and it asks for no scope the bot does not use."""

from __future__ import annotations

import re

import yaml

from tests.conftest import REPO

# What each Web API method the bot calls needs (https://api.slack.com/methods), for the conversation types
# it uses them on.
SCOPES_BY_METHOD = {
    "auth.test": set(),
    "chat.postMessage": {"chat:write"},
    "conversations.list": {"channels:read", "groups:read"},
    "conversations.info": {"channels:read", "groups:read"},
    "conversations.join": {"channels:join"},
    "conversations.history": {"channels:history", "groups:history", "im:history"},
    "conversations.open": {"im:write"},
    "users.conversations": {"channels:read", "groups:read"},
    "views.publish": set(),
    "usergroups.list": {"usergroups:read"},
    "chat.update": {"chat:write"},
    "conversations.replies": {"channels:history", "groups:history", "im:history"},
}
CALL = re.compile(r"\.(?:call|paginate)\(\s*\"([A-Za-z.]+)\"")


def manifest() -> dict:
    return yaml.safe_load((REPO / "manifest.yml").read_text())


def methods_called_by_the_bot() -> set[str]:
    return {method for path in (REPO / "bot").glob("*.py") for method in CALL.findall(path.read_text())}


def test_the_manifest_asks_for_exactly_the_scopes_the_bot_uses() -> None:
    called = methods_called_by_the_bot()
    assert called <= set(SCOPES_BY_METHOD), f"add {called - set(SCOPES_BY_METHOD)} to SCOPES_BY_METHOD"
    needed = set().union(*(SCOPES_BY_METHOD[m] for m in called)) | {"commands"}
    assert set(manifest()["oauth_config"]["scopes"]["bot"]) == needed


def test_every_scope_says_why() -> None:
    lines = (REPO / "manifest.yml").read_text().splitlines()
    scope_lines = [line for line in lines if re.match(r"\s+- [a-z]+:[a-z]+", line)]
    assert scope_lines and all("  # " in line for line in scope_lines)


def test_slash_command_events_and_buttons_all_reach_the_one_endpoint() -> None:
    app = manifest()
    [command] = app["features"]["slash_commands"]
    assert command["command"] == "/feeds"
    settings = app["settings"]
    urls = {
        command["url"],
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
    }
    assert urls == {"https://YOUR-HOST/slack/events"}
    assert settings["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is False
    assert app["features"]["app_home"]["home_tab_enabled"] is True
