"""A Slack Web API stand-in on loopback that speaks Slack's wire format, for slack_sdk to talk to over HTTP.

It checks the bearer token, answers {"ok": true, ...} or {"ok": false, "error": ...}, can answer 429 with
Retry-After or 5xx on demand, and records every accepted post.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

# -- what Slack checks in blocks (a subset: the shapes the bot sends) ------------------------------------

RICH_ELEMENTS = {"text", "link", "date", "user", "usergroup", "broadcast", "channel", "emoji"}
RICH_STYLES = {"bold", "italic", "strike", "code"}
BLOCKS_TEXT_LIMIT = 12_000  # Slack answers msg_blocks_too_long beyond about this much text


def _rich_problem(element: Any) -> str | None:
    kind = element.get("type") if isinstance(element, dict) else None
    if kind not in RICH_ELEMENTS:
        return f"rich_text element type {kind!r}"
    if not set(element.get("style", {})) <= RICH_STYLES:
        return f"rich_text style {element.get('style')}"
    if kind == "text" and not (isinstance(element.get("text"), str) and element["text"]):
        return "rich_text text element without text"
    if kind == "link" and not str(element.get("url", "")).startswith(("http://", "https://")):
        return f"rich_text link url {element.get('url')!r}"
    if kind == "date" and not (isinstance(element.get("timestamp"), int) and element.get("format")):
        return "rich_text date without timestamp or format"
    required = {"user": "user_id", "usergroup": "usergroup_id", "channel": "channel_id", "broadcast": "range"}
    if kind in required and not element.get(required[kind]):
        return f"rich_text {kind} without {required[kind]}"
    return None


def _text_problem(text: Any, limit: int = 3000) -> str | None:
    if not isinstance(text, dict) or text.get("type") not in ("mrkdwn", "plain_text"):
        return f"text object {text!r}"
    if not isinstance(text.get("text"), str) or not text["text"] or len(text["text"]) > limit:
        return "text empty or over its limit"
    return None


def block_chars(block: dict[str, Any]) -> int:
    """Text a block holds, as Slack counts it towards msg_blocks_too_long."""
    return len(visible_text([block]))


def block_problem(blocks: Any, max_blocks: int = 50) -> str | None:
    """Why Slack would answer invalid_blocks (or msg_blocks_too_long), or None."""
    if not isinstance(blocks, list) or len(blocks) > max_blocks:
        return f"blocks must be a list of at most {max_blocks}"
    for block in blocks:
        kind = block.get("type")
        if kind == "section":
            problem = _text_problem(block.get("text"))
            accessory = block.get("accessory")
            if problem is None and accessory is not None:
                url = str(accessory.get("image_url", ""))
                if accessory.get("type") != "image" or not url.startswith("http") or len(url) > 3000:
                    problem = f"accessory {accessory!r}"
        elif kind == "context":
            elements = block.get("elements") or []
            problem = None if 1 <= len(elements) <= 10 else "context needs 1 to 10 elements"
            for element in elements:
                if element.get("type") != "image":
                    problem = problem or _text_problem(element)
        elif kind == "rich_text":
            problem = None
            for section in block.get("elements") or [None]:
                if not isinstance(section, dict) or section.get("type") != "rich_text_section":
                    return f"rich_text holds {section!r}"
                if not section.get("elements"):
                    return "empty rich_text_section"
                for element in section["elements"]:
                    problem = problem or _rich_problem(element)
        elif kind == "header":
            problem = _text_problem(block.get("text"), 150)
        elif kind in ("actions", "divider"):
            problem = None
        else:
            problem = f"block type {kind!r}"
        if problem:
            return problem
    if sum(block_chars(block) for block in blocks) > BLOCKS_TEXT_LIMIT:
        return "msg_blocks_too_long"
    return None


def _shown(element: dict[str, Any]) -> str:
    """A rich_text element as mrkdwn would write it, so assertions read as what a reader sees."""
    kind = element.get("type")
    if kind == "text":
        text = element["text"]
        style = element.get("style", {})
        if style.get("code"):
            text = f"`{text}`"
        return f"*{text}*" if style.get("bold") else text
    if kind == "link":
        label = f"<{element['url']}|{element.get('text', element['url'])}>"
        return f"*{label}*" if element.get("style", {}).get("bold") else label
    if kind == "date":
        return f"<!date^{element['timestamp']}^{element['format']}|{element.get('fallback', '')}>"
    if kind == "user":
        return f"<@{element['user_id']}>"
    if kind == "usergroup":
        return f"<!subteam^{element['usergroup_id']}>"
    if kind == "broadcast":
        return f"<!{element['range']}>"
    if kind == "channel":
        return f"<#{element['channel_id']}>"
    return ""


def visible_text(blocks: list[dict[str, Any]]) -> str:
    """The blocks' text, one block a line, rich_text written as the mrkdwn a reader would see."""
    parts = []
    for block in blocks:
        if isinstance(block.get("text"), dict):
            parts.append(block["text"]["text"])
        for element in block.get("elements", []):
            if block.get("type") == "rich_text":
                parts.append("".join(_shown(e) for e in element.get("elements", [])))
            elif isinstance(element.get("text"), dict):  # a button's label
                parts.append(element["text"]["text"])
            elif isinstance(element.get("text"), str):
                parts.append(element["text"])
    return "\n".join(parts)


@dataclass
class Failure:
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    body: str | None = None
    after_posting: bool = False  # carry the request out, then answer with the failure anyway
    hang: bool = False  # carry the request out, then hold the answer until `release()` (to kill the caller)


@dataclass
class Channel:
    id: str
    name: str
    private: bool = False
    member: bool = False
    archived: bool = False


@dataclass
class SlackState:
    token: str = "xoxb-test-token"
    app_token: str = "xapp-test-token"  # Socket Mode: only apps.connections.open takes it
    socket_url: str | None = None  # what apps.connections.open answers (a ws:// stand-in)
    members: dict[str, set[str]] = field(default_factory=dict)  # user -> channel IDs (users.conversations)
    dms: dict[str, str] = field(default_factory=dict)  # user -> DM channel ID (conversations.open)
    views: list[dict[str, Any]] = field(default_factory=list)  # views.publish calls
    responses: list[dict[str, Any]] = field(default_factory=list)  # posts to response_url
    usergroups: dict[str, str] = field(default_factory=dict)  # handle -> ID (usergroups.list)
    channels: dict[str, Channel] = field(default_factory=dict)
    posts: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    down: bool = False  # every call answers 503
    # hang_call: calls to let through before one hangs, and whether that one is carried out first
    hang_after: int | None = None
    hang_carries_out: bool = False
    hang_method: str | None = None  # count only calls of this method
    # limit_posts: Slack's "about one message per second per channel, short bursts allowed" (None: no limit)
    posts_per_second: float | None = None
    post_burst: int = 1
    post_allowance: dict[str, tuple[float, float]] = field(default_factory=dict)  # channel -> (tokens, at)


class SlackStandIn:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # message timestamps (ts) come from it, as Slack's come from its clock
        self.state = SlackState()
        self._lock = threading.Lock()
        self.hanging = threading.Event()  # set while a `hang` failure holds its answer
        self._released = threading.Event()
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/"

    def start(self) -> SlackStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    # -- test controls -----------------------------------------------------------------------------

    def add_channel(self, channel_id: str, name: str, *, private: bool = False, member: bool = False) -> None:
        with self._lock:
            self.state.channels[channel_id] = Channel(channel_id, name, private, member)

    def archive(self, channel_id: str) -> None:
        with self._lock:
            self.state.channels[channel_id].archived = True

    def fail_next(self, method: str, times: int = 1, **failure: Any) -> None:
        with self._lock:
            self.state.failures.setdefault(method, []).extend(Failure(**failure) for _ in range(times))

    def release(self) -> None:
        self._released.set()

    def hang_call(self, number: int, *, carry_out: bool, method: str | None = None) -> None:
        """The `number`th call from now (of `method`, or of any) holds its answer until `release()`; a post
        is first carried out if `carry_out` (Slack has it, the caller never hears so)."""
        with self._lock:
            self.state.hang_after = number - 1
            self.state.hang_carries_out = carry_out
            self.state.hang_method = method
            self.hanging.clear()
            self._released.clear()

    def limit_posts(self, per_second: float = 1.0, burst: int = 3) -> None:
        """chat.postMessage answers 429 (Retry-After: 1) beyond `per_second` posts a second in a channel
        after a burst of `burst`, as Slack does; measured on the real clock, as Slack's is."""
        with self._lock:
            self.state.posts_per_second = per_second
            self.state.post_burst = burst

    def _rate_limited(self, channel: str) -> bool:
        rate = self.state.posts_per_second
        if rate is None:
            return False
        now = time.monotonic()
        tokens, at = self.state.post_allowance.get(channel, (float(self.state.post_burst), now))
        tokens = min(float(self.state.post_burst), tokens + (now - at) * rate)
        if tokens < 1:
            self.state.post_allowance[channel] = (tokens, now)
            return True
        self.state.post_allowance[channel] = (tokens - 1, now)
        return False

    def set_down(self, down: bool) -> None:
        with self._lock:
            self.state.down = down

    @property
    def posts(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.state.posts)

    def posts_to(self, channel: str) -> list[dict[str, Any]]:
        return [p for p in self.posts if p["channel"] == channel]

    def calls(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [params for name, params in self.state.calls if name == method]

    # -- the API -----------------------------------------------------------------------------------

    def handle(
        self, method: str, token: str | None, params: dict[str, Any]
    ) -> tuple[int, dict[str, str], str]:
        answer = self._answer(method, token, params)
        if answer is None:  # a hung request: it was carried out, and its caller never hears back
            self.hanging.set()
            self._released.wait(timeout=60)
            return 200, {}, json.dumps({"ok": False, "error": "request_timeout"})
        return answer

    def _answer(
        self, method: str, token: str | None, params: dict[str, Any]
    ) -> tuple[int, dict[str, str], str] | None:
        with self._lock:
            self.state.calls.append((method, params))
            counted = (
                method == self.state.hang_method
                if self.state.hang_method
                else not method.startswith("response/")
            )
            if self.state.hang_after is not None and counted:
                if self.state.hang_after == 0:
                    self.state.hang_after = None
                    if self.state.hang_carries_out and method == "chat.postMessage":
                        self._api_chat_postMessage(params)
                    return None
                self.state.hang_after -= 1
            if self.state.down:
                return 503, {}, "<html>Service Unavailable</html>"
            queued = self.state.failures.get(method)
            if queued:
                failure = queued.pop(0)
                if failure.after_posting or failure.hang:
                    self._api_chat_postMessage(params)
                if failure.hang:
                    return None
                headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
                if failure.body is not None:
                    return failure.status, headers, failure.body
                return (
                    failure.status,
                    headers,
                    json.dumps({"ok": False, "error": failure.error or "fatal_error"}),
                )
            if method.startswith("response/"):  # a slash command's response_url: no token, as in Slack
                if "blocks" in params and block_problem(params["blocks"]) is not None:
                    return 200, {}, json.dumps({"ok": False, "error": "invalid_blocks"})
                self.state.responses.append(params)
                return 200, {}, json.dumps({"ok": True})
            expected = self.state.app_token if method == "apps.connections.open" else self.state.token
            if token != expected:
                return 200, {}, json.dumps({"ok": False, "error": "invalid_auth" if token else "not_authed"})
            if method == "chat.postMessage" and self._rate_limited(str(params.get("channel"))):
                return 429, {"Retry-After": "1"}, json.dumps({"ok": False, "error": "ratelimited"})
            answer = getattr(self, "_api_" + method.replace(".", "_"), None)
            if answer is None:
                return 200, {}, json.dumps({"ok": False, "error": "unknown_method"})
            return 200, {}, json.dumps(answer(params))

    def _api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "team": "Test Team", "user": "feedwatch", "user_id": "UBOT", "bot_id": "BBOT"}

    def _api_conversations_list(self, params: dict[str, Any]) -> dict[str, Any]:
        exclude_archived = str(params.get("exclude_archived")).lower() in ("true", "1")
        channels = [
            {
                "id": c.id,
                "name": c.name,
                "is_private": c.private,
                "is_member": c.member,
                "is_archived": c.archived,
            }
            for c in self.state.channels.values()
            if not (c.archived and exclude_archived)
        ]
        # Two pages, so pagination is exercised.
        start = int(params.get("cursor") or 0)
        page = channels[start : start + 2]
        next_cursor = str(start + 2) if start + 2 < len(channels) else ""
        return {"ok": True, "channels": page, "response_metadata": {"next_cursor": next_cursor}}

    def _api_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self.state.socket_url:
            return {"ok": False, "error": "socket_mode_not_enabled"}
        return {"ok": True, "url": self.state.socket_url}

    def _api_conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("users", ""))
        if user not in self.state.dms:
            dm = "D" + user.removeprefix("U")[:10]
            self.state.dms[user] = dm
            self.state.channels[dm] = Channel(dm, "", private=True, member=True)
        return {"ok": True, "channel": {"id": self.state.dms[user]}}

    def _api_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self.state.channels.get(str(params.get("channel")))
        if channel is None or (channel.private and not channel.member):
            return {"ok": False, "error": "channel_not_found"}  # a private channel is invisible until invited
        return {
            "ok": True,
            "channel": {
                "id": channel.id,
                "name": channel.name,
                "is_private": channel.private,
                "is_member": channel.member,
                "is_archived": channel.archived,
            },
        }

    def _api_users_conversations(self, params: dict[str, Any]) -> dict[str, Any]:
        ids = self.state.members.get(str(params.get("user")), set())
        channels = [{"id": c} for c in sorted(ids) if c in self.state.channels]
        return {"ok": True, "channels": channels, "response_metadata": {"next_cursor": ""}}

    def _api_usergroups_list(self, params: dict[str, Any]) -> dict[str, Any]:
        groups = [
            {"id": gid, "handle": handle, "name": handle} for handle, gid in self.state.usergroups.items()
        ]
        return {"ok": True, "usergroups": groups}

    def _api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        """Edits a recorded post in place, as Slack does; the post keeps its ts and metadata."""
        if "blocks" in params and block_problem(params["blocks"]) is not None:
            return {"ok": False, "error": "invalid_blocks"}
        for post in self.state.posts:
            if post["channel"] == params.get("channel") and post["ts"] == params.get("ts"):
                post.update({k: v for k, v in params.items() if k in ("text", "blocks")}, edited=True)
                return {"ok": True, "channel": post["channel"], "ts": post["ts"]}
        return {"ok": False, "error": "message_not_found"}

    def _api_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        view = params.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if block_problem(view.get("blocks", []), max_blocks=100) not in (None, "msg_blocks_too_long"):
            return {"ok": False, "error": "invalid_arguments"}
        self.state.views.append({"user_id": params.get("user_id"), "view": view})
        return {"ok": True, "view": {"id": "V1"}}

    def response_url(self, name: str = "r1") -> str:
        return self.url.replace("/api/", f"/api/response/{name}")

    @property
    def responses(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.state.responses)

    def _api_conversations_join(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self.state.channels.get(str(params.get("channel")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if channel.archived:
            return {"ok": False, "error": "is_archived"}
        if channel.private:
            return {"ok": False, "error": "method_not_supported_for_channel_type"}
        channel.member = True
        return {"ok": True, "channel": {"id": channel.id}}

    def _api_conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self.state.channels.get(str(params.get("channel")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not channel.member:
            return {"ok": False, "error": "not_in_channel"}
        oldest = float(params.get("oldest") or 0)
        include_metadata = str(params.get("include_all_metadata")).lower() in ("true", "1")
        messages = [
            {"type": "message", "ts": p["ts"], "text": p.get("text", ""), "bot_id": "BBOT"}
            | ({"metadata": p["metadata"]} if include_metadata and p.get("metadata") else {})
            for p in reversed(self.state.posts)  # newest first, as Slack answers
            if p["channel"] == channel.id and float(p["ts"]) >= oldest
        ]
        return {"ok": True, "messages": messages, "has_more": False}

    def _api_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        parent = str(params.get("ts"))
        include_metadata = str(params.get("include_all_metadata")).lower() in ("true", "1")
        thread = [
            {"type": "message", "ts": p["ts"], "text": p.get("text", ""), "bot_id": "BBOT"}
            | ({"metadata": p["metadata"]} if include_metadata and p.get("metadata") else {})
            for p in self.state.posts
            if p["channel"] == params.get("channel") and (p["ts"] == parent or p.get("thread_ts") == parent)
        ]
        return {"ok": True, "messages": thread, "has_more": False}

    def _api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self.state.channels.get(str(params.get("channel")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if channel.archived:
            return {"ok": False, "error": "is_archived"}
        if not channel.member:
            return {"ok": False, "error": "not_in_channel"}
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        problem = block_problem(params["blocks"]) if "blocks" in params else None
        if problem is not None:
            return {
                "ok": False,
                "error": "msg_blocks_too_long" if problem == "msg_blocks_too_long" else "invalid_blocks",
            }
        ts = f"{self.clock():.6f}"
        if self.state.posts and float(ts) <= float(self.state.posts[-1]["ts"]):
            ts = f"{float(self.state.posts[-1]['ts']) + 0.000001:.6f}"  # ts are unique per channel
        self.state.posts.append({**params, "ts": ts})
        return {"ok": True, "channel": channel.id, "ts": ts, "message": {"text": params.get("text")}}


class _Handler(BaseHTTPRequestHandler):
    standin: SlackStandIn

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        method = path.removeprefix("/api/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        params: dict[str, Any] = dict(parse_qsl(query))
        content_type = self.headers.get("Content-Type", "")
        if raw and "json" in content_type:
            params.update(json.loads(raw))
        elif raw:
            params.update(parse_qsl(raw.decode()))
        for key in ("blocks", "metadata", "view"):  # form-encoded calls carry these as JSON strings
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else params.get("token")
        status, headers, body = self.standin.handle(method, token, params)
        encoded = body.encode()
        self.send_response(status)
        self.send_header(
            "Content-Type", "application/json; charset=utf-8" if body.startswith("{") else "text/html"
        )
        self.send_header("Content-Length", str(len(encoded)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def running_slack(clock: Callable[[], float] = time.time) -> Iterator[SlackStandIn]:
    standin = SlackStandIn(clock).start()
    try:
        yield standin
    finally:
        standin.stop()
