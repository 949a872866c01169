"""Delivers alerts: to Slack through slack_sdk's WebClient (retries, joins, errors as DeliveryError), or to
the terminal in console mode. Rendering is blocks.py's job; deciding what to send is the pipeline's.
"""

from __future__ import annotations

import http.client
import logging
import socket
import sys
import threading
import time
import urllib.error
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from bot.blocks import (
    ALERT_EVENT_TYPE,
    GROUP_EVENT_TYPE,
    Paging,
    as_plain_text,
    render_alert,
    render_console,
    without_image,
)
from bot.errors import AUTH_ERRORS, DeliveryError
from bot.fetch import retry_after_seconds
from bot.model import ChannelMatch, Item, Message, RuleSet
from bot.oncall import SPECIAL_MENTIONS, policy_of
from bot.store import pending_id

log = logging.getLogger(__name__)

HISTORY_SLACK_SECONDS = 120  # clocks differ: look a little further back than the first attempt

# Errors that say "try again later" rather than "a person must fix something".
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout", "timeout"}
)
# Errors that stop every post, not just one channel's.
CHANNEL_HINTS = {
    "channel_not_found": "no such channel, or a private one the bot is not in: check the ID, /invite the bot",
    "not_in_channel": "the bot is not in this private channel: /invite it there",
    "is_archived": "the channel is archived",
    "missing_scope": "the app lacks a scope: see the scopes listed in the README",
    "invalid_auth": "SLACK_BOT_TOKEN was refused: check the token (xoxb-...) and that the app is installed",
    "not_authed": "no token was sent: set SLACK_BOT_TOKEN",
    "token_revoked": "SLACK_BOT_TOKEN was revoked: reinstall the app and update the token",
}


class ConsoleSink:
    """Console mode (no SLACK_BOT_TOKEN): prints each alert instead of posting it."""

    def __init__(self, stream: IO[str] | None = None, channel_names: dict[str, str] | None = None) -> None:
        self._stream = stream or sys.stdout
        self._names = channel_names or {}
        self._lock = threading.Lock()

    def deliver(self, match: ChannelMatch, source: str, *, since: datetime | None = None) -> str | None:
        text = render_console(match, source=source, channel_label=self._names.get(match.channel))
        policy = policy_of(match)
        page = " ".join(
            (["🚨 HIGH PRIORITY"] if policy.high else []) + [f"pages {m}" for m in policy.mentions]
        )
        if page:
            text = f"{page}\n{text}"
        with self._lock:
            print(text, file=self._stream, flush=True)
            print(file=self._stream, flush=True)
        return None

    def deliver_group(
        self, message: Message, items: Sequence[Item], *, since: datetime | None = None
    ) -> None:
        label = self._names.get(message.channel, message.channel)
        lines = [f"▶ {label}  ·  {message.text}"] + [f"  • {item.title}\n    {item.link}" for item in items]
        with self._lock:
            print("\n".join(lines), file=self._stream, flush=True)
            print(file=self._stream, flush=True)

    def deliver_notice(self, channel: str, text: str) -> None:
        with self._lock:
            print(f"▶ {self._names.get(channel, channel)}  ·  {text}", file=self._stream, flush=True)
            print(file=self._stream, flush=True)


def error_from_exception(channel: str, exc: BaseException) -> DeliveryError:
    """slack_sdk and urllib errors -> our one error type: transient or not, and whether Slack may have
    carried out the request (then a write must not simply be sent again)."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", 200)
        data = response.data if isinstance(response.data, dict) else {}
        # A 5xx body is often a proxy's HTML page, which slack_sdk quotes whole in "error": name the status.
        error = f"HTTP {status}" if status >= 500 else str(data.get("error") or f"HTTP {status}")
        headers = getattr(response, "headers", {}) or {}
        retry_after = retry_after_seconds(headers.get("Retry-After") or headers.get("retry-after"))
        if status == 429 or error == "ratelimited":  # refused before anything was done
            return DeliveryError(channel, "ratelimited", transient=True, retry_after=retry_after or 1.0)
        transient = status >= 500 or error in TRANSIENT_ERRORS
        return DeliveryError(
            channel,
            error,
            transient=transient,
            retry_after=retry_after if transient else None,
            affects_all=transient or error in AUTH_ERRORS,
            uncertain=transient,  # Slack: "some aspect of the operation may have succeeded"
        )
    if isinstance(exc, urllib.error.URLError):
        # urllib wraps what fails while connecting and sending; the request never reached Slack.
        return DeliveryError(channel, f"connection error: {exc.reason}", transient=True)
    if isinstance(exc, socket.timeout | TimeoutError | ConnectionError | http.client.HTTPException | OSError):
        # Failed while waiting for the answer: Slack may have the request.
        return DeliveryError(
            channel, f"no answer: {type(exc).__name__}: {exc}", transient=True, uncertain=True
        )
    if isinstance(exc, SlackClientError):
        return DeliveryError(channel, f"{type(exc).__name__}: {exc}", transient=True, uncertain=True)
    raise exc


def is_same_article(alert_payload: dict[str, Any], item: Item) -> bool:
    """An earlier alert's metadata names this article: by its canonical link, or by its key (a URL key
    anywhere; any other key only within the same feed, see store.delivery_key)."""
    if item.link and alert_payload.get("link") == item.link:
        return True
    if alert_payload.get("item_key") != item.key:
        return False
    return item.key.startswith(("http://", "https://")) or alert_payload.get("feed_id") == item.feed_id


class SlackClient:
    """WebClient with our retry policy: 429 waits Retry-After, 5xx and connection errors back off.

    slack_sdk's own retry handlers sleep inside the call; ours take an injectable `sleep` so tests never
    wait, and a Retry-After longer than `max_wait` is not waited out here: the alert stays pending instead.
    """

    def __init__(
        self,
        token: str,
        base_url: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 4,
        max_wait: float = 30.0,
        timeout: int = 15,
    ) -> None:
        self.web = WebClient(token=token, base_url=base_url, timeout=timeout, retry_handlers=[])
        self._sleep = sleep
        self._attempts = attempts
        self._max_wait = max_wait

    def call(self, method: str, *, idempotent: bool = True, **params: Any) -> dict[str, Any]:
        """Calls a Web API method. A write that is not idempotent (chat.postMessage) is only retried here
        when Slack surely did not carry it out (429, a connection that never reached Slack)."""
        channel = str(params.get("channel", ""))  # names the channel in errors

        def should_retry(exc: BaseException) -> bool:
            return (
                isinstance(exc, DeliveryError)
                and exc.transient
                and (idempotent or not exc.uncertain)
                and (exc.retry_after is None or exc.retry_after <= self._max_wait)
            )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, DeliveryError) and exc.retry_after is not None:
                return exc.retry_after
            return float(min(2 ** (state.attempt_number - 1), self._max_wait))

        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait,
            retry=retry_if_exception(should_retry),
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    # The typed methods know how each call is encoded (JSON for writes, a form for reads).
                    response = getattr(self.web, method.replace(".", "_"))(**params)
                except Exception as e:  # translated, then retried or raised by tenacity
                    raise error_from_exception(channel, e) from e
                return dict(response.data) if isinstance(response.data, dict) else {}
        raise AssertionError("unreachable: tenacity reraises the last error")

    def paginate(
        self, method: str, key: str, *, max_pages: int = 100, **params: Any
    ) -> Iterable[dict[str, Any]]:
        cursor = ""
        for _ in range(max_pages):
            page = self.call(method, **{**params, **({"cursor": cursor} if cursor else {})})
            yield from page.get(key, [])
            cursor = (page.get("response_metadata") or {}).get("next_cursor", "")
            if not cursor:
                return


class MentionResolver:
    """Mentions as written in the rules -> Slack's syntax. A user group handle ("@policy-oncall") becomes
    <!subteam^ID> through usergroups.list, cached and asked again when a handle is not in the cache."""

    def __init__(self, client: SlackClient) -> None:
        self._client = client
        self._groups: dict[str, str] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Raises DeliveryError when Slack cannot say (unreachable, missing usergroups:read)."""
        answer = self._client.call("usergroups.list")
        groups = {str(g.get("handle", "")).lower(): str(g["id"]) for g in answer.get("usergroups", [])}
        with self._lock:
            self._groups = groups

    def resolve(self, mention: str) -> str | None:
        """None for a handle Slack does not know (or cannot be asked about now)."""
        if mention in SPECIAL_MENTIONS:
            return SPECIAL_MENTIONS[mention]
        if mention.startswith("<"):
            return mention
        handle = mention.lstrip("@").lower()
        with self._lock:
            known = self._groups.get(handle)
        if known is None:
            try:
                self.refresh()
            except DeliveryError as e:
                log.error("cannot resolve mention=%s error=%s (posting without it)", mention, e.error)
                return None
            with self._lock:
                known = self._groups.get(handle)
            if known is None:
                log.error("unknown user group mention=%s (no such handle in this workspace)", mention)
                return None
        return f"<!subteam^{known}>"

    def unknown(self, mentions: Iterable[str]) -> list[str]:
        """The handles Slack does not know; raises DeliveryError when it cannot be asked."""
        handles = [m for m in mentions if m.startswith("@") and m not in SPECIAL_MENTIONS]
        if not handles:
            return []
        self.refresh()
        with self._lock:
            return [m for m in handles if m.lstrip("@").lower() not in self._groups]


def check_mentions(rules: RuleSet, resolver: MentionResolver) -> list[str]:
    """One problem line per user group handle in the rules that the workspace does not have."""
    places: dict[str, list[str]] = {}
    for rule in rules.channels:
        for field_name, mention in (
            ("mention", rule.oncall.mention),
            ("escalate.to", rule.oncall.escalate.to if rule.oncall.escalate else None),
        ):
            if mention:
                places.setdefault(mention, []).append(f"{rule.location or rules.path}: {field_name}")
    unknown = resolver.unknown(places)
    return [
        f"{place}: no user group '{mention}' in this Slack workspace (usergroups.list)"
        for mention in unknown
        for place in places[mention]
    ]


# Slack's answers to a message it cannot take as formatted, though plain text would do.
FORMAT_ERRORS = frozenset({"msg_too_long", "invalid_blocks", "invalid_blocks_format", "too_many_blocks"})


class SlackSink:
    """Posts alerts with chat.postMessage, joining public channels first (the bot must be a member to read
    its own history later). Each failure is logged once per channel and error, not once per alert."""

    def __init__(
        self, client: SlackClient, *, interactive: bool = False, mentions: MentionResolver | None = None
    ) -> None:
        self._client = client
        self._interactive = interactive
        self._mentions = mentions or MentionResolver(client)
        self._joined: set[str] = set()
        self._reported: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def paging(self, match: ChannelMatch) -> Paging:
        policy = policy_of(match)
        resolved = tuple(m for m in (self._mentions.resolve(mention) for mention in policy.mentions) if m)
        ack_id = pending_id(match.channel, match.item) if policy.ack else None
        return Paging(priority=policy.priority, mentions=resolved, ack_id=ack_id)

    def deliver(self, match: ChannelMatch, source: str, *, since: datetime | None = None) -> str | None:
        """Returns the message's ts. `since` is given when an earlier attempt may have landed: the channel's
        messages from then on are searched for this alert (by its metadata) before it is posted again."""
        message = render_alert(match, source=source, interactive=self._interactive, paging=self.paging(match))
        self._ensure_member(match.channel)
        if since is not None:
            found = self._already_posted(match, since)
            if found is not None:
                log.info(
                    "alert found in channel channel=%s key=%s (earlier attempt had landed)",
                    match.channel,
                    match.item.key,
                )
                return found
        try:
            return self._post(message)
        except DeliveryError as e:
            error = e
        if error.error == "invalid_blocks" and any("accessory" in block for block in message.blocks):
            # The thumbnail is an accessory, which Slack drops when it cannot fetch it; should Slack refuse
            # the blocks over it all the same (a URL it will not take), the alert goes without.
            try:
                return self._post(without_image(message))
            except DeliveryError as e:
                error = e
        if error.error in FORMAT_ERRORS:
            # Something in the feed's text broke the formatted message: the alert still goes, as the
            # plain text notifications show (title and link), with its metadata.
            log.warning(
                "slack refused the formatted alert channel=%s key=%s error=%s; posting it as plain text",
                match.channel,
                match.item.key,
                error.error,
            )
            try:
                return self._post(as_plain_text(message))
            except DeliveryError as e:
                error = e
        self._report(error)
        raise error

    def deliver_group(
        self, message: Message, items: Sequence[Item], *, since: datetime | None = None
    ) -> str | None:
        """A grouped message (digest, quiet hours, flood); `since` as for deliver: look before posting."""
        self._ensure_member(message.channel)
        if since is not None and items:
            found = self._find_in_history(message.channel, since, items[0], GROUP_EVENT_TYPE)
            if found is not None:
                log.info(
                    "grouped message found in channel channel=%s (earlier attempt had landed)",
                    message.channel,
                )
                return found
        try:
            return self._post(message)
        except DeliveryError as e:
            self._report(e)
            raise

    def deliver_notice(self, channel: str, text: str) -> str | None:
        self._ensure_member(channel)
        try:
            answer = self._client.call(
                "chat.postMessage", idempotent=False, channel=channel, text=text, unfurl_links=False
            )
        except DeliveryError as e:
            self._report(e)
            raise
        return str(answer["ts"]) if answer.get("ts") else None

    def _post(self, message: Message) -> str | None:
        answer = self._client.call("chat.postMessage", idempotent=False, **message.payload())
        return str(answer["ts"]) if answer.get("ts") else None

    def _already_posted(self, match: ChannelMatch, since: datetime) -> str | None:
        """The ts of an earlier post of this alert in the channel, if there is one."""
        return self._find_in_history(match.channel, since, match.item, ALERT_EVENT_TYPE)

    def _find_in_history(self, channel: str, since: datetime, item: Item, event_type: str) -> str | None:
        oldest = f"{since.timestamp() - HISTORY_SLACK_SECONDS:.6f}"
        try:
            for message in self._client.paginate(
                "conversations.history",
                "messages",
                channel=channel,
                oldest=oldest,
                include_all_metadata=True,
                limit=200,
                max_pages=5,
            ):
                metadata = message.get("metadata") or {}
                payload = metadata.get("event_payload") or {}
                if metadata.get("event_type") != event_type:
                    continue
                listed = payload.get("items", []) if event_type == GROUP_EVENT_TYPE else [payload]
                if any(isinstance(entry, dict) and is_same_article(entry, item) for entry in listed):
                    return str(message.get("ts") or "") or None
        except DeliveryError as e:
            if e.affects_all:
                raise
            # Without channels:history the check cannot be made; a possible repeat beats a lost alert.
            self._report(e)
        return None

    def _ensure_member(self, channel: str) -> None:
        with self._lock:
            if channel in self._joined or channel.startswith("D"):  # a DM has nothing to join
                return
        try:
            self._client.call("conversations.join", channel=channel)
        except DeliveryError as e:
            if e.affects_all:
                self._report(e)
                raise
            # Private channels cannot be joined, and a missing channels:join scope is reported once: either
            # way posting tells whether the bot is in, so joining is not tried again for this channel.
            if e.error != "method_not_supported_for_channel_type":
                self._report(e)
        with self._lock:
            self._joined.add(channel)

    def _report(self, error: DeliveryError) -> None:
        # A refused token or an outage is one problem, however many channels it blocks.
        key = ("*" if error.affects_all else error.channel, error.error)
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        hint = CHANNEL_HINTS.get(error.error, "will retry" if error.transient else "")
        log.error(
            "slack error channel=%s error=%s%s", error.channel, error.error, f" ({hint})" if hint else ""
        )


@dataclass(frozen=True)
class SlackChannel:
    id: str
    name: str
    archived: bool = False


def list_channels(client: SlackClient, names: Iterable[str]) -> list[SlackChannel]:
    """The workspace's channels the bot can see (conversations.list), archived ones included so that they
    can be named as such. Stops early once every wanted '#name' has been seen open."""
    wanted = {name.lstrip("#").lower() for name in names}
    listed: list[SlackChannel] = []
    found: set[str] = set()
    for channel in client.paginate(
        "conversations.list", "channels", types="public_channel,private_channel", limit=1000
    ):
        entry = SlackChannel(
            str(channel["id"]), str(channel.get("name", "")).lower(), bool(channel.get("is_archived"))
        )
        listed.append(entry)
        if entry.name in wanted and not entry.archived:
            found.add(entry.name)
            if found == wanted:
                break
    return listed


def channel_history(client: SlackClient, channel: str, oldest: datetime) -> list[dict[str, Any]]:
    """The channel's messages since `oldest`, newest first, metadata included (for bot.recovery); none
    when the bot cannot read the channel, which is logged."""
    try:
        return list(
            client.paginate(
                "conversations.history",
                "messages",
                channel=channel,
                oldest=f"{oldest.timestamp():.6f}",
                include_all_metadata=True,
                limit=200,
                max_pages=RECOVERY_MAX_PAGES,
            )
        )
    except DeliveryError as e:
        if e.affects_all:
            raise
        if e.error == "not_in_channel":  # not joined yet: it has posted nothing there since
            log.info("channel history skipped channel=%s (the bot is not a member)", channel)
        else:
            log.warning("cannot read channel history channel=%s error=%s", channel, e.error)
        return []


RECOVERY_MAX_PAGES = 10  # 2,000 messages a channel: far more than a wipe's worth of alerts


def check_auth(client: SlackClient) -> dict[str, Any]:
    return client.call("auth.test")
