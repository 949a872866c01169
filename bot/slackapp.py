"""The interactive Slack app: slash commands, the mute button and App Home through slack-bolt, served over
HTTP (bot.web, one process, beside the scheduler) or Socket Mode; in every mode /healthz on PORT (ok or
failing only) and the detail (the full /healthz, /metrics) on METRICS_PORT.
Slow commands are answered through response_url from a bounded pool (bot.slowwork), never by a waiting
listener thread.

Bolt verifies each request's signature and timestamp (older than five minutes: 401) and routes it; the
answers come from bot.service and bot.home, which need no Slack client.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from slack_bolt import App as BoltApp
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.app import App
from bot.blocks import ACK_ACTION_ID, MUTE_ACTION_ID, Paging, render_alert
from bot.commands import CommandError, Reply, redact_urls, text_reply
from bot.config import Environment
from bot.errors import STOP_REQUESTS, BotError, DeliveryError
from bot.home import RecentAlert, home_view
from bot.membership import user_channels
from bot.model import ChannelMatch, Item
from bot.oncall import OpenAlert
from bot.service import CommandService, Invocation
from bot.slack import SlackClient
from bot.slowwork import SlowWork, is_slow_command
from bot.web import HttpServer, detail_routes, public_routes

log = logging.getLogger(__name__)

ACK_BUDGET_SECONDS = 2.0  # Slack wants an answer within 3 s; slower work answers through response_url
RECENT_ALERTS_ON_HOME = 10
NOT_THIS_CHANNELS_ALERT = "That button is not on an alert posted in this channel. Nothing was changed."
WORKING = "Working on it…"


class SlackInterface:
    def __init__(
        self,
        app: App,
        env: Environment,
        *,
        on_resume: Callable[[], None] | None = None,
        budget: float = ACK_BUDGET_SECONDS,
    ) -> None:
        if app.client is None or env.slack_token is None:
            raise ValueError("the Slack app needs SLACK_BOT_TOKEN")
        self.app = app
        self.client: SlackClient = app.client
        self.env = env
        self.budget = budget
        self._dm_channels: dict[str, str] = {}
        self._workers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="slash")
        self._slow = SlowWork()
        self.service = CommandService(
            store=app.store,
            rules=lambda: app.rules,
            on_rules_changed=app.refresh_rules,
            on_resume=on_resume or (lambda: None),
            open_dm=self.open_dm,
            check_membership=self.check_membership,
            now=app.pipeline.now,
            command=env.command,
            try_feed=app.pipeline.try_feed,
            on_feeds_changed=app.feeds_changed,
            visible_feeds=app.visible_feeds,
        )
        web = WebClient(token=env.slack_token, base_url=env.slack_api_url)
        self.bolt = BoltApp(
            client=web,
            signing_secret=env.signing_secret,
            token_verification_enabled=False,  # build_app has called auth.test, with its own error handling
            request_verification_enabled=bool(env.signing_secret),
            logger=logging.getLogger("bot.bolt"),
        )
        self.bolt.command(env.command)(self.on_command)
        self.bolt.action(MUTE_ACTION_ID)(self.on_mute)
        self.bolt.action(ACK_ACTION_ID)(self.on_ack)
        self.bolt.event("app_home_opened")(self.on_home_opened)

    # -- Slack lookups the service needs ------------------------------------------------------------

    def open_dm(self, user: str) -> str:
        """The user's DM with the app (conversations.open), where a personal watch is delivered."""
        if user not in self._dm_channels:
            try:
                answer = self.client.call("conversations.open", users=user)
            except DeliveryError as e:
                raise CommandError(f"I cannot open a direct message with you ({e.error}).") from e
            self._dm_channels[user] = str(answer["channel"]["id"])
        return self._dm_channels[user]

    def check_membership(self, channel: str) -> str | None:
        """Joins a public channel now; for a private one the bot is not in, says how to invite it."""
        try:
            info = self.client.call("conversations.info", channel=channel).get("channel", {})
            if info.get("is_member"):
                return None
            if not info.get("is_private"):
                self.client.call("conversations.join", channel=channel)
                return None
        except DeliveryError as e:
            if e.error != "channel_not_found":
                return f"I could not check this channel ({e.error}); alerts may not reach it."
            # What Slack answers about a private channel the bot is not in.
        return (
            "I am not in this private channel yet: `/invite @feedwatch` here, or the alerts cannot reach it."
        )

    # -- listeners ---------------------------------------------------------------------------------

    def _answer(self, call: Invocation) -> Reply:
        try:
            return self.service.handle(call)
        except STOP_REQUESTS:
            raise
        except BaseException:  # a handler boundary: a Rust panic too (bot.errors.STOP_REQUESTS)
            log.exception("command crashed text=%r channel=%s", redact_urls(call.text), call.channel)
            return text_reply("Something went wrong on my side; the details are in the bot's log.")

    def on_command(
        self, ack: Callable[..., None], body: dict[str, Any], respond: Callable[..., None]
    ) -> None:
        call = Invocation(
            text=str(body.get("text", "")),
            channel=str(body.get("channel_id", "")),
            user=str(body.get("user_id", "")),
            command=str(body.get("command") or self.env.command),
            channel_name=str(body.get("channel_name", "")),
        )
        # A feed's URL may carry a token: the log keeps its host and path only.
        log.info("command user=%s channel=%s text=%r", call.user, call.channel, redact_urls(call.text)[:200])
        if is_slow_command(call.text):
            self._defer(call, ack, respond)
            return
        work = self._workers.submit(self._answer, call)
        try:
            reply = work.result(timeout=self.budget)
        except FutureTimeout:
            # Acknowledge in time; the answer follows through response_url when it is ready, and no
            # listener thread waits for it.
            ack(text=WORKING, response_type="ephemeral")
            work.add_done_callback(lambda done: self._send_late(call, done.result(), respond))
            return
        ack(**_reply_args(reply))

    def _defer(self, call: Invocation, ack: Callable[..., None], respond: Callable[..., None]) -> None:
        """Slow work: acknowledged at once, done on the bounded slow pool, answered through response_url."""
        acked = threading.Event()

        def work() -> None:
            acked.wait(timeout=ACK_BUDGET_SECONDS)  # "Working on it…" first, then the answer
            self._send_late(call, self._answer(call), respond)

        refusal = self._slow.submit(call.user, work)
        ack(text=refusal or WORKING, response_type="ephemeral")
        acked.set()
        if refusal:
            log.warning("slow command refused user=%s channel=%s reason=%r", call.user, call.channel, refusal)

    def _send_late(self, call: Invocation, reply: Reply, respond: Callable[..., None]) -> None:
        try:
            respond(**_reply_args(reply))
        except Exception as e:  # Slack unreachable, or the response_url expired (30 minutes)
            log.error("late answer not delivered user=%s channel=%s error=%r", call.user, call.channel, e)

    def on_mute(self, ack: Callable[..., None], body: dict[str, Any], respond: Callable[..., None]) -> None:
        ack()
        action = (body.get("actions") or [{}])[0]
        try:
            value = json.loads(action.get("value") or "{}")
            terms = [str(term) for term in value.get("terms", [])]
            feed = str(value["feed"]) if value.get("feed") else None
            key = str(value.get("key") or "")
        except (ValueError, AttributeError, TypeError):
            terms, feed, key = [], None, ""
        channel = _payload_channel(body)
        user = str((body.get("user") or {}).get("id", ""))
        # The button's value names the alert; a payload naming another channel, or an alert never posted
        # in this one, must not mute that channel's topics.
        if not self.app.store.is_delivered(channel, Item(feed or "", key, "", "")):
            log.warning("button refused action=mute channel=%s user=%s: no such alert here", channel, user)
            respond(text=NOT_THIS_CHANNELS_ALERT, response_type="ephemeral", replace_original=False)
            return
        reply = self.service.mute(channel, user, terms, feed)
        respond(**_reply_args(reply), replace_original=False)

    def on_ack(self, ack: Callable[..., None], body: dict[str, Any], respond: Callable[..., None]) -> None:
        """Acknowledge: records who and when, stops escalation, and shows it in the message itself."""
        ack()
        alert_id = str(((body.get("actions") or [{}])[0]).get("value") or "")
        user = str((body.get("user") or {}).get("id", ""))
        now = self.app.pipeline.now()
        before = self.app.store.open_alert(alert_id)
        if before is not None and before.channel != _payload_channel(body):  # not this channel's alert
            log.warning(
                "button refused action=ack channel=%s user=%s: another channel's alert", before.channel, user
            )
            respond(text=NOT_THIS_CHANNELS_ALERT, response_type="ephemeral", replace_original=False)
            return
        alert = self.app.store.acknowledge(alert_id, user, now)
        if alert is None or before is None:
            respond(
                text="This alert is no longer tracked.", response_type="ephemeral", replace_original=False
            )
            return
        if before.acked_by is not None:  # a second click, or a second person: harmless, and said so
            respond(
                text=f"Already acknowledged by <@{before.acked_by}>.",
                response_type="ephemeral",
                replace_original=False,
            )
            return
        log.info("alert acknowledged channel=%s user=%s key=%s", alert.channel, user, alert.item.key)
        self.update_alert_message(alert)

    def update_alert_message(self, alert: OpenAlert) -> None:
        match = self.app.pipeline.match_for(alert.channel, alert.item) or ChannelMatch(
            alert.channel, alert.item, alert.keywords
        )
        match = ChannelMatch(alert.channel, alert.item, alert.keywords, match.rules)
        mentions = tuple(
            m
            for m in (self.app.mentions.resolve(x) if self.app.mentions else x for x in alert.policy.mentions)
            if m
        )
        acked = (alert.acked_by, alert.acked_at) if alert.acked_by and alert.acked_at else None
        paging = Paging(priority=alert.policy.priority, mentions=mentions, acked=acked)
        message = render_alert(match, source=alert.source, interactive=True, paging=paging)
        try:
            self.client.call(
                "chat.update",
                channel=alert.channel,
                ts=alert.ts,
                text=message.text,
                blocks=list(message.blocks),
            )
        except DeliveryError as e:
            log.error("alert message not updated channel=%s error=%s", alert.channel, e.error)

    def on_home_opened(self, event: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return
        user = str(event.get("user", ""))
        try:
            self.publish_home(user)
        except DeliveryError as e:
            log.error("app home not published user=%s error=%s", user, e.error)

    def publish_home(self, user: str) -> None:
        self.client.call("views.publish", user_id=user, view=self.home_for(user))

    def home_for(self, user: str) -> dict[str, object]:
        visible = self.app.visible_feeds(user)  # a feed only private channels follow: their members'
        feeds = [feed for feed in self.app.feed_statuses() if visible is None or feed.id in visible]
        by_channel: dict[str, list[Any]] = {}
        for rule in self.app.rules.channels:
            by_channel.setdefault(rule.channel, []).append(rule)
        mine = self._channels_of(user, by_channel)
        if any(channel.startswith("D") for channel in by_channel):
            try:
                own_dm = self.open_dm(user)  # cached; after a restart it is asked again
            except CommandError:
                own_dm = ""
            if own_dm in by_channel:
                mine.add(own_dm)
        now = self.app.pipeline.now()
        paused = {}
        for channel in mine:
            pause = self.app.store.pause_of(channel, now)
            if pause is not None:
                paused[channel] = pause.until
        recent = []
        # Only alerts the user can read anyway: those in their channels and their own personal watch.
        for channel, key, at in self.app.store.recent_deliveries(RECENT_ALERTS_ON_HOME * 3, channels=mine):
            item = self.app.store.archived_item(key)
            if item is not None:
                recent.append(RecentAlert(channel, item, at))
            if len(recent) == RECENT_ALERTS_ON_HOME:
                break
        return home_view(
            command=self.env.command,
            feeds=feeds,
            channel_rules={channel: by_channel[channel] for channel in by_channel if channel in mine},
            recent=recent,
            paused=paused,
            broken=self.app.store.channel_problems(),
        )

    def _channels_of(self, user: str, candidates: Iterable[str]) -> set[str]:
        wanted = set(candidates)
        if not wanted:
            return set()
        return set(user_channels(self.client, user) or ()) & wanted

    def close(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._slow.close()


def _payload_channel(body: dict[str, Any]) -> str:
    """The channel a button press came from, as the payload names it."""
    return str((body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id", ""))


def _reply_args(reply: Reply) -> dict[str, Any]:
    args: dict[str, Any] = {
        "text": reply.text,
        "response_type": "in_channel" if reply.in_channel else "ephemeral",
    }
    if reply.blocks:
        args["blocks"] = list(reply.blocks)
    return args


def socket_mode_problem(error: Exception) -> str:
    """One line for a Socket Mode start that failed, naming what to fix (never the token)."""
    code = ""
    if isinstance(error, SlackApiError) and isinstance(error.response.data, dict):
        code = str(error.response.data.get("error", ""))
    if code in ("invalid_auth", "not_authed", "token_revoked", "token_expired"):
        return (
            f"Slack refused SLACK_APP_TOKEN ({code}): "
            "use the app-level token (xapp-...) with the connections:write scope"
        )
    if code == "socket_mode_not_enabled":
        return "Socket Mode is off for this app: turn it on in the app settings, or unset SLACK_APP_TOKEN"
    return f"cannot open a Socket Mode connection ({code or type(error).__name__}); try again shortly"


# -- serving ---------------------------------------------------------------------------------------------


class Serving:
    """What `run` serves beside the scheduler, stopped together: the public listener, the detail listener
    (None when METRICS_PORT could not be bound), the Slack app."""

    def __init__(
        self,
        http: HttpServer,
        interface: SlackInterface | None,
        socket: SocketModeHandler | None,
        detail: HttpServer | None = None,
    ):
        self.http, self.interface, self.socket, self.detail = http, interface, socket, detail

    def stop(self) -> None:
        if self.socket is not None:
            self.socket.close()  # type: ignore[no-untyped-call]
        self.http.stop()
        if self.detail is not None:
            self.detail.stop()
        if self.interface is not None:
            self.interface.close()


def serve(
    app: App, env: Environment, *, on_resume: Callable[[], None] | None = None, host: str = "0.0.0.0"
) -> Serving:
    """Starts /healthz on PORT, the detail listener on METRICS_PORT, and the Slack app when the environment
    asks for it: Socket Mode with SLACK_APP_TOKEN, else HTTP with SLACK_SIGNING_SECRET."""
    interface = SlackInterface(app, env, on_resume=on_resume) if env.interactive and not app.console else None
    socket = None
    slack_http = None
    if interface is not None and env.app_token:
        socket = SocketModeHandler(
            interface.bolt, env.app_token, web_client=WebClient(base_url=env.slack_api_url)
        )
        try:
            socket.connect()  # type: ignore[no-untyped-call]
        except (SlackApiError, SlackClientError, OSError) as e:
            socket.close()  # type: ignore[no-untyped-call]
            interface.close()
            raise BotError(socket_mode_problem(e)) from e
        if socket.client.is_connected():
            log.info("slack socket mode connected")
        else:  # slack_sdk logs the reason and keeps trying in the background
            log.warning("slack socket mode not connected yet; retrying in the background")
    elif interface is not None:
        slack_http = SlackRequestHandler(interface.bolt)
    try:
        detail: HttpServer | None = HttpServer(
            detail_routes(app.status, app.metrics.exposition),
            port=env.metrics_port,
            host=env.metrics_host,
            name="http-detail",
        ).start()
    except OSError as e:
        # Monitoring detail is not worth silencing the bot for: the public /healthz still answers.
        log.error(
            "detail listener not started: METRICS_HOST=%s METRICS_PORT=%d: %s (/metrics and the full "
            "/healthz are off; set METRICS_PORT to a free port)",
            env.metrics_host,
            env.metrics_port,
            e.strerror or e,
        )
        detail = None
    if detail is not None:
        log.info("detail listening host=%s port=%d paths=/healthz, /metrics", detail.host, detail.port)
    try:
        http = HttpServer(
            public_routes(app.status, slack_http), port=env.port, host=host, name="http"
        ).start()
    except OSError as e:
        if detail is not None:
            detail.stop()
        if interface is not None:
            interface.close()
        raise BotError(f"cannot listen on PORT={env.port}: {e.strerror or e}") from e
    paths = ["/healthz"] + (["/slack/events"] if slack_http else [])
    log.info("listening port=%d paths=%s", http.port, ", ".join(paths))
    return Serving(http, interface, socket, detail)
