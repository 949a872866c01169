"""Whoever can reach PORT, signed or not, and whichever member sends slow commands, cannot exhaust the
bot's memory or threads: oversized bodies and headers are refused before they are read, slow connections
hold no thread and are closed at a deadline, and slow commands are bounded per user and in total. Through
the real HTTP listener on loopback, with real signed commands."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.app import build_app
from bot.config import environment_from
from bot.slackapp import WORKING, serve
from bot.slowwork import MAX_SLOW_COMMANDS, MAX_SLOW_COMMANDS_PER_USER
from bot.web import MAX_REQUEST_BODY_BYTES, HttpServer, public_routes
from tests.conftest import Clock, scmp_feed
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn
from tests.test_feed_faults import FaultServer
from tests.test_slack_app import Bot, reply_text, start_bot, wait_for, write_rules

ANSWER_WITHIN = 1.0  # seconds: what a member and a monitor must get while the attacks run


@pytest.fixture
def bot(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> Iterator[Bot]:
    # No admins: any member may add a feed, the case where slow commands can pile up.
    yield from start_bot(tmp_path, feed_host, slack, clock, settings="  allow_private_feeds: true\n")


def connect(bot: Bot) -> socket.socket:
    return socket.create_connection(("127.0.0.1", bot.serving.http.port), timeout=5)


def read_answer(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it)."""
    received = b""
    try:
        while chunk := conn.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_an_unsigned_post_claiming_a_huge_body_gets_413_before_a_byte_of_it_is_sent(bot: Bot) -> None:
    """Refused from Content-Length alone: the client sends headers and no body, and still hears the answer,
    so the server read none of it (a server that reads first waits here for a gigabyte)."""
    with connect(bot) as conn:
        conn.sendall(
            b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        answer = read_answer(conn)
    assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large"), answer[:200]
    assert f"exceeds max_body of {MAX_REQUEST_BODY_BYTES}".encode() in answer
    assert bot.app.store.subscriptions() == []


def test_a_chunked_body_is_cut_at_the_limit_and_never_reaches_the_slack_app(bot: Bot) -> None:
    """No Content-Length to refuse from: reading stops at 1 MiB. 5 MiB are offered; the answer is 413, not
    the 401 that Bolt would give a body it had read whole."""
    received: list[bytes] = []
    with connect(bot) as conn:
        reader = threading.Thread(target=lambda: received.append(read_answer(conn)))
        reader.start()
        conn.sendall(
            b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"a" * 65536
        sent = 0
        try:
            while sent < 5 * 1024 * 1024:
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            conn.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection on us: the point
        reader.join(timeout=10)
    assert received and received[0].startswith(b"HTTP/1.1 413 Request Entity Too Large"), received[:1]


def test_headers_over_the_limit_get_431(bot: Bot) -> None:
    with connect(bot) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: bot\r\n")
        try:
            for n in range(64):
                conn.sendall(b"X-Padding-%d: %s\r\n" % (n, b"p" * 1024))
            conn.sendall(b"\r\n")
        except OSError:
            pass
        answer = read_answer(conn)
    assert b" 431 Request Header Fields Too Large\r\n" in answer.split(b"\n")[0] + b"\n", answer[:200]
    assert b"exceeds max_header of 32768" in answer


class Trickler:
    """Slowloris: connections that each send the start of a request, then one more header byte at a time,
    until stopped. Each byte arrives well within any per-read timeout."""

    def __init__(self, port: int, connections: int, every: float = 0.2) -> None:
        self.stop = threading.Event()
        self.sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(connections)]
        for conn in self.sockets:
            conn.sendall(b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nX-Slow: ")
        self._thread = threading.Thread(target=self._trickle, args=(every,), daemon=True)
        self._thread.start()

    def _trickle(self, every: float) -> None:
        while not self.stop.wait(every):
            for conn in self.sockets:
                with contextlib.suppress(OSError):  # one the server closed: it stays closed
                    conn.sendall(b"x")

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5)
        for conn in self.sockets:
            conn.close()


def trickles_forever(conn: socket.socket, stop: threading.Event) -> None:
    """A feed host that answers one header byte at a time until the test ends."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stop.wait(0.2):
        conn.sendall(b"x")


def timed(call) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = call()
    return time.monotonic() - started, response


def test_slow_connections_and_slow_add_feeds_leave_help_and_healthz_answering_within_a_second(
    bot: Bot,
) -> None:
    slow_host = FaultServer(trickles_forever)
    slowloris = Trickler(bot.serving.http.port, connections=12)
    try:
        # Ten members each add a feed whose host trickles: each is acknowledged at once.
        for n in range(10):
            took, response = timed(
                lambda n=n: bot.command(f"add-feed {slow_host.url(f'/slow{n}')} id:slow{n}", user=f"U{n}")
            )
            assert response.json()["text"] == WORKING and took < ANSWER_WITHIN, (n, took)
        # A member's third slow command while two are in progress: refused, naming the limit.
        # (Each its own URL: an add-feed of a URL already being added is refused at once.)
        bot.command(f"add-feed {slow_host.url('/again')} id:again", user="U0")
        refused = reply_text(bot.command(f"add-feed {slow_host.url('/more')} id:more", user="U0").json())
        assert refused.startswith(f"You already have {MAX_SLOW_COMMANDS_PER_USER} slow commands")
        for n in range(11, MAX_SLOW_COMMANDS):  # the 12th to 16th slow commands: queued
            assert bot.command(f"search chips {n}", user=f"U{n}").json()["text"] == WORKING
        busy = reply_text(bot.command("search chips", user="U99").json())
        assert busy.startswith(f"I am busy with {MAX_SLOW_COMMANDS} slow commands")

        took_help, help_reply = timed(lambda: bot.command("help", user="U0OTHER01"))
        took_health, health = timed(lambda: bot.http.get(bot.url + "/healthz"))
    finally:
        slowloris.close()
        slow_host.close()
    # Every command taken is answered once its host gives up: nothing is left waiting.
    wait_for(lambda: len(bot.slack.responses) == MAX_SLOW_COMMANDS, timeout=30)
    assert help_reply.status_code == 200 and "subscribe" in reply_text(help_reply.json())
    assert took_help < ANSWER_WITHIN, took_help
    assert health.json() == {"status": "ok"} and took_health < ANSWER_WITHIN, took_health


def test_latest_matches_the_whole_archive_so_it_is_answered_from_the_slow_pool(bot: Bot) -> None:
    """Like search, latest reads every archived item (through the channel's rules): on the slash pool, ten
    of them over a large archive would hold the threads `/feeds help` needs."""
    assert bot.command("latest").json()["text"] == WORKING
    wait_for(lambda: bot.slack.responses, timeout=30)


class Seconds:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_connection_that_has_not_sent_a_whole_request_by_the_deadline_is_closed() -> None:
    clock = Seconds()
    server = HttpServer(
        public_routes(lambda: {"status": "ok"}), port=0, host="127.0.0.1", clock=clock, deadline=10
    ).start()

    def answered_at_once() -> bool:
        """A whole request is answered whatever the others do; once it is, the server's loop has read
        everything sent before it."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as prompt:
            prompt.sendall(b"GET /healthz HTTP/1.1\r\nHost: bot\r\nConnection: close\r\n\r\n")
            return read_answer(prompt).startswith(b"HTTP/1.1 200 OK")

    try:
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: bot\r\nX-Slow: x")
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        assert answered_at_once()
        clock.now += 9  # within the deadline: both still open
        assert answered_at_once()
        slow.setblocking(False)
        with pytest.raises(BlockingIOError):  # open, nothing to read
            slow.recv(1)
        slow.settimeout(5)
        clock.now += 2  # past it: both the trickler and the silent one are closed
        assert read_answer(slow) == b"" and read_answer(idle) == b""
    finally:
        server.stop()


def test_a_detail_port_already_taken_is_one_error_line_and_the_bot_serves_on(
    tmp_path: Path, feed_host: FeedHost, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        environ = {
            "BOT_RULES": str(write_rules(tmp_path, feed_host.serve("/feed", scmp_feed()))),
            "BOT_DB": str(tmp_path / "state.json"),
            "PORT": "0",
            "METRICS_PORT": str(port),
        }
        app = build_app(environment_from(environ, tmp_path), sleep=clock.sleep, now=clock, listening=True)
        try:
            serving = serve(app, environment_from(environ, tmp_path), host="127.0.0.1")
            try:
                health = httpx.get(f"http://127.0.0.1:{serving.http.port}/healthz", timeout=5)
            finally:
                serving.stop()
        finally:
            app.close()
    assert serving.detail is None
    [line] = [r.getMessage() for r in caplog.records if "detail listener not started" in r.getMessage()]
    assert line.startswith(f"detail listener not started: METRICS_HOST=127.0.0.1 METRICS_PORT={port}: ")
    assert health.json() == {"status": "ok"}
