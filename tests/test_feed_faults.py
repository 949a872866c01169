"""Feed-side faults the bot survives, each on loopback through the real HttpFetcher and the real bot: one
clear error line for the feed, nothing posted from it, nothing lost once it is good again, and the other
feeds polled in the same cycle. Small fetch limits keep each test within a second or two; nothing sleeps."""

from __future__ import annotations

import gzip
import io
import logging
import random
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, build_app
from bot.config import environment_from
from bot.errors import FetchError
from bot.fetch import FetchLimits, HttpFetcher
from bot.home import feed_line
from bot.model import FetchResult
from bot.pipeline import PollReport
from tests.conftest import Clock, rss_item, scmp_feed, scmp_items
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn

# The size and redirect caps every fetch here runs under; the time limits are a real bot's, so that a fetch
# slowed by a loaded machine still meets the fault it is meant to meet (the cap, the bad gzip...), not a
# timeout.
LIMITS = FetchLimits(max_bytes=1_000_000, max_redirects=3)
# For the faults that are about time: small limits keep each such test within a second or two. Only the
# faulty feed's URL is fetched under them (see FaultWorld.timed); the read and connect timeouts sit well
# below the total, so that each still ends the fetch first on a loaded machine.
TIMED = FetchLimits(
    connect_timeout=0.3, read_timeout=0.3, total_timeout=1.0, max_bytes=1_000_000, max_redirects=3
)
CHANNEL = "CFAULTS01"
# The three newest items of the SCMP feed, all on the channel's topics: what feed "bad" owes once it is good.
SCMP_NEWEST = {
    "Wingtech says core of Nexperia China unit now based on mainland, can operate independently",
    "Is Huawei’s new chip scaling law a true breakthrough, or mere hype?",
    "US pressure has only helped make China’s tech giants stronger",
}


def news(*, new: bool = True) -> bytes:
    """The SCMP feed cut down to its ten newest items (quick to parse); without `new`, as it was before its
    three newest were published."""
    body, items = scmp_feed(), scmp_items()
    head, tail = body[: body.index(items[0])], body[body.index(items[-1]) + len(items[-1]) :]
    return head + b"".join(items[0 if new else 3 : 10]) + tail


def small_feed(*items: bytes) -> bytes:
    return (
        b'<?xml version="1.0"?>\n<rss version="2.0"><channel><title>Good</title>'
        b"<link>https://good.example/</link><description>A feed that keeps working</description>"
        + b"".join(items)
        + b"\n</channel></rss>\n"
    )


# -- servers that misbehave --------------------------------------------------------------------------------


class FaultServer:
    """A loopback TCP server that reads each request and then runs `script(connection, stop)`: whatever a
    broken or hostile feed host does. `stop` is set at teardown, so no script outlives its test."""

    def __init__(self, script: Callable[[socket.socket, threading.Event], None]) -> None:
        self.script = script
        self.stop = threading.Event()
        self.requests = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/feed") -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}{path}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                self.requests += 1
                self.script(conn, self.stop)
            except OSError:
                pass  # the bot gave up on us: that is the point

    def close(self) -> None:
        self.stop.set()
        self._sock.close()


def never_answers(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(30)


def trickles_headers(conn: socket.socket, stop: threading.Event) -> None:
    """One header byte every 0.05 s: each read gets something, so only a total deadline ends it. Gives up
    after 5 s, so that a bot without one fails the test instead of hanging it."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    for _ in range(100):
        if stop.wait(0.05):
            return
        conn.sendall(b"x")


def trickles_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 100000\r\n\r\n")
    conn.sendall(b'<?xml version="1.0"?><rss version="2.0"><channel>')
    for _ in range(100):
        if stop.wait(0.05):
            return
        conn.sendall(b" ")


def hangs_up_mid_body(conn: socket.socket, stop: threading.Event) -> None:
    body = news()
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:5000]
    )


@cache
def gzip_bomb() -> bytes:
    """64 MiB of zeros in about 64 KB of gzip: small on the wire, 64 times the test's size cap decoded."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join(squeeze.compress(zeros) for _ in range(64)) + squeeze.flush()


def encoded(body: bytes, encoding: str) -> Callable[[socket.socket, threading.Event], None]:
    """Answers with `body` as is, sent under that Content-Encoding."""

    def script(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
            + f"Content-Encoding: {encoding}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    return script


def redirects_forever(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@contextmanager
def port_that_never_accepts() -> Iterator[str]:
    """A listening socket whose accept queue is full: the kernel drops further SYNs, so connecting hangs
    until the client's connect timeout, as with a host behind a firewall that drops packets."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect(listener.getsockname())
            fillers.append(filler)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/feed"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# -- the bot, with two feeds and one channel ---------------------------------------------------------------


@dataclass
class Cycle:
    app: App
    reports: dict[str, PollReport]
    posts: list[str]  # the titles (or notice texts) posted to CHANNEL during the cycle
    seconds: float


class FaultWorld:
    """Feed "bad" (the SCMP feed) and feed "good" (a small one); one channel following both."""

    def __init__(self, tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> None:
        self.tmp_path, self.feed_host, self.slack, self.clock = tmp_path, feed_host, slack, clock
        self.fetcher = HttpFetcher(LIMITS)
        self.timed_fetcher = HttpFetcher(TIMED)
        self.timed_urls: set[str] = set()  # fetched under TIMED, as the faults about time need
        self.servers: list[FaultServer] = []
        self.connect_hang_url = ""  # set while a test holds a port_that_never_accepts
        self.environ = {
            "SLACK_BOT_TOKEN": slack.state.token,
            "SLACK_API_URL": slack.url,
            "BOT_RULES": str(tmp_path / "rules.yaml"),
            "BOT_DB": str(tmp_path / "data" / "state.json"),
        }
        self.good_url = feed_host.serve(
            "/good", small_feed(rss_item("An old item", "https://good.example/0"))
        )
        self.bad_url = feed_host.serve("/bad", news(new=False))

    def server(self, script: Callable[[socket.socket, threading.Event], None]) -> FaultServer:
        server = FaultServer(script)
        self.servers.append(server)
        return server

    def timed(self, url: str) -> str:
        """`url`, to be fetched under the small TIMED limits (every other URL gets LIMITS)."""
        self.timed_urls.add(url)
        return url

    def fetch(self, url: str, **options: Any) -> FetchResult:
        """The bot's fetcher: the feeds as any fetch would see them, a fault about time under TIMED."""
        fetcher = self.timed_fetcher if url in self.timed_urls else self.fetcher
        return fetcher.fetch(url, **options)

    def write_rules(self, bad_url: str | None = None, *, settings: str = "", channels: str = "") -> None:
        (self.tmp_path / "rules.yaml").write_text(
            f"settings:\n  interval: 2m\n  backfill: 0\n{settings}"
            f"feeds:\n  - id: bad\n    url: {bad_url or self.bad_url}\n"
            f"  - id: good\n    url: {self.good_url}\n"
            f"channels:\n  - channel: {CHANNEL}\n    keywords: [Nexperia, Huawei]\n{channels}"
        )

    def start(self) -> App:
        return build_app(
            environment_from(self.environ, self.tmp_path),
            fetcher=self,
            now=self.clock,
            sleep=self.clock.sleep,
        )

    def cycle(self) -> Cycle:
        """One `run --once`: a fresh process on the same state."""
        before = len(self.slack.posts_to(CHANNEL))
        app = self.start()
        started = time.monotonic()
        try:
            reports = app.poll_all_once()
            app.retry_pending()
        finally:
            app.close()
        seconds = time.monotonic() - started
        posts = [post["text"].split(" https://")[0] for post in self.slack.posts_to(CHANNEL)[before:]]
        return Cycle(app, {report.feed_id: report for report in reports}, posts, seconds)

    def close(self) -> None:
        for server in self.servers:
            server.close()
        self.fetcher.close()
        self.timed_fetcher.close()


@pytest.fixture
def world(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> Iterator[FaultWorld]:
    slack.add_channel(CHANNEL, "faults")
    world = FaultWorld(tmp_path, feed_host, slack, clock)
    world.write_rules()
    try:
        yield world
    finally:
        world.close()


# -- each fault: one clear line, nothing posted from it, nothing lost, the other feed on time ---------------


def with_entities(declarations: str, use: str) -> bytes:
    """The SCMP feed with a DOCTYPE declaring these entities, and `use` in its newest item's title."""
    body = news()
    body = body.replace(b"?>", f"?>\n<!DOCTYPE rss [\n{declarations}\n]>".encode(), 1)
    return body.replace(b"<title>", f"<title>{use}".encode(), 2)


BILLION_LAUGHS = with_entities(
    "\n".join(
        ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10)]
    ),
    "&lol9;",
)
# One 20 KB entity used 5,000 times: 100 MB of text. feedparser keeps an entity that names no other, and
# its fallback parser expands it without limit.
ONE_BIG_ENTITY = with_entities(f'<!ENTITY big "{"x" * 20_000}">', "&big;" * 5_000)


def status_page(host: FeedHost, status: int) -> str:
    host.fail_next(f"/status-{status}", status)
    return host.url(f"/status-{status}")


FAULTS: dict[str, tuple[Callable[[FaultWorld], str], str]] = {
    "connect-timeout": (lambda w: w.timed(w.connect_hang_url), "connect timeout after 0.3s"),
    "read-timeout": (lambda w: w.timed(w.server(never_answers).url()), "read timeout after 0.3s"),
    "trickled-headers": (lambda w: w.timed(w.server(trickles_headers).url()), "download took over 1s"),
    "trickled-body": (lambda w: w.timed(w.server(trickles_body).url()), "download took over 1s"),
    "hang-up-mid-body": (
        lambda w: w.server(hangs_up_mid_body).url(),
        "RemoteProtocolError: peer closed connection without sending complete message body",
    ),
    "http-500": (lambda w: status_page(w.feed_host, 500), "HTTP 500 Internal Server Error"),
    "http-503": (lambda w: status_page(w.feed_host, 503), "HTTP 503 Service Unavailable"),
    "http-404": (lambda w: status_page(w.feed_host, 404), "HTTP 404 Not Found"),
    "http-410": (lambda w: status_page(w.feed_host, 410), "HTTP 410 Gone"),
    "html": (
        lambda w: w.feed_host.serve(
            "/html", b"<!DOCTYPE html><html><body><h1>Log in</h1></body></html>", "text/html"
        ),
        "not a feed: looks like HTML",
    ),
    "random-bytes": (
        lambda w: w.feed_host.serve("/noise", random.Random(7).randbytes(20_000), "application/rss+xml"),
        "not a feed: ",
    ),
    "over-the-cap": (
        lambda w: w.feed_host.serve("/big", random.Random(7).randbytes(1_200_000)),
        "over the 1000000 byte cap",
    ),
    "redirect-loop": (lambda w: w.server(redirects_forever).url(), "more than 3 redirects"),
    "gzip-bomb": (lambda w: w.server(encoded(gzip_bomb(), "gzip")).url(), "over the 1000000 byte cap"),
    "bad-gzip": (
        lambda w: w.server(encoded(b"\x1f\x8b not gzip at all", "gzip")).url(),
        "body could not be decoded (gzip): Error -3 while decompressing data",
    ),
    "truncated-xml": (
        lambda w: w.feed_host.serve("/cut", news()[:10_000]),
        "broken feed, cut off before its end: line 80:162: no element found",
    ),
    "billion-laughs": (
        lambda w: w.feed_host.serve("/laughs", BILLION_LAUGHS),
        "refused: its DOCTYPE declares the XML entity 'lol1'",
    ),
    "one-big-entity": (
        lambda w: w.feed_host.serve("/big-entity", ONE_BIG_ENTITY),
        "refused: its DOCTYPE declares the XML entity 'big'",
    ),
    "brotli": (lambda w: w.server(encoded(b"...", "br")).url(), "unsupported Content-Encoding 'br'"),
}


# What /healthz, App Home and the Slack notices say of each fault: its kind; the detail is in the log line.
SHOWN = {
    "connect-timeout": "timed out",
    "read-timeout": "timed out",
    "trickled-headers": "timed out",
    "trickled-body": "timed out",
    "hang-up-mid-body": "network error",
    "http-500": "HTTP 500",
    "http-503": "HTTP 503",
    "http-404": "HTTP 404",
    "http-410": "HTTP 410",
    "html": "not a feed",
    "random-bytes": "not a feed",
    "over-the-cap": "too large (over the size cap)",
    "redirect-loop": "too many redirects",
    "gzip-bomb": "too large (over the size cap)",
    "bad-gzip": "could not be decoded",
    "truncated-xml": "not a feed",
    "billion-laughs": "not a feed",
    "one-big-entity": "not a feed",
    "brotli": "could not be decoded",
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_feed_fault_is_one_clear_error_and_loses_nothing(
    world: FaultWorld, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    assert world.cycle().posts == []  # the baseline: both feeds known, nothing posted (backfill 0)
    world.feed_host.serve("/bad", news())  # three new items on the channel's topics...
    world.feed_host.serve(
        "/good", small_feed(rss_item("Nexperia opens a plant", "https://good.example/1"))
    )  # ...and one on the good feed
    setup, expected = FAULTS[fault]
    with port_that_never_accepts() as world.connect_hang_url:
        world.write_rules(setup(world))  # ...but feed "bad" is now broken in this way
        caplog.clear()
        with caplog.at_level(logging.INFO):
            broken = world.cycle()

    report = broken.reports["bad"]
    assert report.status == "error" and expected in (report.error or "")
    assert "\n" not in report.error and len(report.error) < 250
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("poll feed=bad ")]
    assert f"status=error error={report.error!r}" in line
    assert broken.app.status()["feeds"]["bad"]["last_error"] == SHOWN[fault]
    # The good feed's alert, in the same cycle; and only a gone feed is worth a notice at once.
    gone_notice = ["⚠️ Feed *bad* is gone"] if fault == "http-410" else []
    assert sorted(post.split(":")[0] for post in broken.posts) == sorted(
        ["Nexperia opens a plant", *gone_notice]
    )
    limits = TIMED if world.timed_urls else LIMITS
    assert broken.seconds < limits.total_timeout + 1.5

    world.write_rules()  # the feed is good again
    world.clock.advance(days=1)  # (a gone feed is checked again after a day)
    recovered = world.cycle().posts
    assert sorted(set(recovered) & SCMP_NEWEST) == sorted(SCMP_NEWEST)  # nothing was lost
    assert len(recovered) == 3 + len(gone_notice)  # and the gone feed's channel hears it is back


# -- the fetcher's own limits ------------------------------------------------------------------------------


def test_a_gzip_bomb_is_refused_without_decoding_more_than_the_cap() -> None:
    server = FaultServer(encoded(gzip_bomb(), "gzip"))
    fetcher = HttpFetcher(LIMITS)
    tracemalloc.start()
    try:
        with pytest.raises(FetchError, match="over the 1000000 byte cap"):
            fetcher.fetch(server.url())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        fetcher.close()
        server.close()
    # The cap is 1 MB; decoding a whole network read of the bomb at once would have taken some 64 MB.
    assert peak < 4 * LIMITS.max_bytes


@pytest.mark.parametrize(
    "squeeze",
    [
        lambda body: gzip.compress(body),
        lambda body: zlib.compress(body),  # "deflate" as the RFC says: zlib-wrapped
        lambda body: zlib.compress(body, wbits=-zlib.MAX_WBITS),  # "deflate" as some servers send it: raw
    ],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
def test_compressed_bodies_are_decoded(squeeze: Callable[[bytes], bytes]) -> None:
    encoding = "gzip" if squeeze(b"x")[:2] == b"\x1f\x8b" else "deflate"
    server = FaultServer(encoded(squeeze(scmp_feed()), encoding))
    fetcher = HttpFetcher(LIMITS)
    try:
        assert fetcher.fetch(server.url()).body == scmp_feed()
    finally:
        fetcher.close()
        server.close()


# -- 410 Gone ------------------------------------------------------------------------------------------------


def test_a_feed_answering_410_is_gone_checked_once_a_day_and_remembered_across_restarts(
    world: FaultWorld, caplog: pytest.LogCaptureFixture
) -> None:
    world.cycle()
    world.feed_host.fail_next("/bad", 410, times=2)
    gone_at = world.clock.now
    app = world.start()
    bad = app.rules.feeds[0]
    with caplog.at_level(logging.INFO):
        assert app.poll_when_due(bad).error == "HTTP 410 Gone"
    assert f"failures=1 gone_since={gone_at.isoformat()}" in caplog.text
    status = app.status()
    assert status["feeds"]["bad"]["gone_since"] == gone_at.isoformat()
    assert status["status"] == "ok"  # the other feed works: a gone feed is the rules' problem
    [line] = [line for line in map(feed_line, app.feed_statuses()) if line.startswith("*bad*")]
    assert "⚫ gone since" in line and "2026-06-01 09:00 UTC" in line and "checked once a day" in line
    app.close()

    world.clock.advance(hours=23)
    app = world.start()  # a restart: still gone, and not asked again before the day is out
    assert app.status()["feeds"]["bad"]["gone_since"] == gone_at.isoformat()
    assert app.poll_when_due(bad) is None
    assert app.poll_all_once()[0].status == "skipped"  # run --once from cron, too
    assert len(world.feed_host.requests_for("/bad")) == 2  # the baseline and the 410
    world.clock.advance(hours=1)
    assert app.poll_when_due(bad).error == "HTTP 410 Gone"  # a day later: checked, still gone
    assert app.status()["feeds"]["bad"]["gone_since"] == gone_at.isoformat()
    app.close()
    notices = [p["text"] for p in world.slack.posts_to(CHANNEL) if p["text"].startswith("⚠️ Feed *bad*")]
    assert len(notices) == 1 and "is gone" in notices[0]  # told at once, and once

    world.feed_host.serve("/bad", news())  # it is back, with three new items
    world.clock.advance(days=1)
    back = world.cycle()
    assert back.reports["bad"].status == "ok"
    assert sorted(back.posts) == sorted(
        [
            *SCMP_NEWEST,
            "✅ Feed *bad* works again (it had been failing since 2026-06-01 09:00 UTC). "
            "Its alerts are back.",
        ]
    )
    assert back.app.status()["feeds"]["bad"]["gone_since"] is None


def test_when_every_feed_is_failing_or_gone_healthz_says_failing(world: FaultWorld) -> None:
    world.cycle()
    world.feed_host.fail_next("/bad", 410)
    world.feed_host.fail_next("/good", 503)
    app = world.cycle().app
    assert app.status()["status"] == "failing"


# -- notices: ten failures in a row, and the recovery ------------------------------------------------------

OTHER = "COTHER001"


def test_ten_failures_in_a_row_post_one_notice_to_each_following_channel_and_one_on_recovery(
    world: FaultWorld,
) -> None:
    world.slack.add_channel(OTHER, "other")
    world.write_rules(channels=f"  - channel: {OTHER}\n    feeds: [good]\n    keywords: [Nexperia]\n")
    world.cycle()
    failing_since = world.clock.now + timedelta(minutes=2)
    world.feed_host.serve("/bad", news())
    world.feed_host.fail_next("/bad", 503, times=12)
    for poll in range(1, 13):  # each cycle is a new process: a restart between every two polls
        world.clock.advance(minutes=2)
        posts = world.cycle().posts
        if poll == 10:
            assert posts == [
                f"⚠️ Feed *bad* has failed 10 polls in a row since {failing_since:%Y-%m-%d %H:%M} UTC: "
                "`HTTP 503`. No alerts come from it meanwhile; I will say so when it works again."
            ]
        else:
            assert posts == [], f"poll {poll}"
    assert world.slack.posts_to(OTHER) == []  # it follows only the good feed

    world.clock.advance(minutes=2)
    back = world.cycle().posts
    notice = f"✅ Feed *bad* works again (it had been failing since {failing_since:%Y-%m-%d %H:%M} UTC)."
    assert sorted(back) == sorted([*SCMP_NEWEST, notice + " Its alerts are back."])  # nothing lost
    world.clock.advance(minutes=2)
    assert world.cycle().posts == []
    assert world.slack.posts_to(OTHER) == []


def test_a_notice_slack_refuses_is_posted_at_the_next_poll_and_only_once(world: FaultWorld) -> None:
    world.write_rules(settings="  feed_failure_notice_after: 1\n")
    world.cycle()
    world.feed_host.fail_next("/bad", 404, times=3)
    world.slack.fail_next("chat.postMessage", status=429, retry_after=120, error="ratelimited")
    assert world.cycle().posts == []  # refused: still owed
    world.clock.advance(minutes=2)
    assert [post[:32] for post in world.cycle().posts] == ["⚠️ Feed *bad* has failed 2 polls"]
    world.clock.advance(minutes=2)
    assert world.cycle().posts == []


def test_in_console_mode_the_notice_is_printed_like_an_alert(
    tmp_path: Path, feed_host: FeedHost, clock: Clock
) -> None:
    out = io.StringIO()
    feed_host.fail_next("/gone", 410)
    (tmp_path / "rules.yaml").write_text(
        f"feeds:\n  - id: gone\n    url: {feed_host.url('/gone')}\n"
        f"channels:\n  - channel: {CHANNEL}\n    keywords: [Nexperia]\n"
    )
    fetcher = HttpFetcher(LIMITS)
    app = build_app(
        environment_from({"BOT_RULES": str(tmp_path / "rules.yaml")}, tmp_path),
        stdout=out,
        fetcher=fetcher,
        now=clock,
    )
    app.poll_all_once()
    app.close()
    fetcher.close()
    assert out.getvalue() == (
        f"▶ {CHANNEL}  ·  ⚠️ Feed *gone* is gone: since 2026-06-01 09:00 UTC its host answers 410 Gone. "
        "I will check it once a day and say so if it comes back; if it is gone for good, remove it from the "
        "rules.\n\n"
    )


# -- what the feed host asks: Retry-After and Cache-Control ------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "next_poll_in"),
    [
        ({"Cache-Control": "max-age=600"}, timedelta(minutes=10)),
        ({"Cache-Control": "public, max-age=86400"}, timedelta(minutes=15)),  # never hours: capped
        ({"Cache-Control": "max-age=30"}, None),  # never sooner than the feed's own interval
        ({"Cache-Control": "no-cache"}, None),
        (503, timedelta(minutes=10)),  # Retry-After: 600 on a 503
        (500, None),  # ...but not on a 500: the backoff alone, one interval after a first failure
    ],
    ids=["max-age", "long-max-age", "short-max-age", "no-cache", "503-retry-after", "500-retry-after"],
)
def test_the_next_poll_waits_for_what_the_host_asked_up_to_15_minutes(
    world: FaultWorld, answer: dict[str, str] | int, next_poll_in: timedelta | None
) -> None:
    world.cycle()
    if isinstance(answer, int):
        world.feed_host.fail_next("/bad", answer, headers={"Retry-After": "600"})
    else:
        world.feed_host.serve("/bad", news(), headers=answer)
    app = world.start()
    bad = app.rules.feeds[0]
    polled_at = world.clock.now
    app.poll_when_due(bad)
    if next_poll_in is None:
        assert app.next_poll_at(bad) is None  # at its next tick, two minutes on
    else:
        assert app.next_poll_at(bad) == polled_at + next_poll_in
        world.clock.advance(seconds=next_poll_in.total_seconds() - 60)
        assert app.poll_when_due(bad) is None  # not asked again before then
        world.clock.advance(seconds=60)
        assert app.poll_when_due(bad) is not None
    app.close()


def test_max_age_on_a_304_is_honoured_too(world: FaultWorld) -> None:
    world.feed_host.serve("/bad", news(new=False), headers={"Cache-Control": "max-age=300"})
    app = world.start()
    bad = app.rules.feeds[0]
    assert app.poll_when_due(bad).status == "ok"
    world.clock.advance(minutes=5)
    assert app.poll_when_due(bad).status == "not_modified"
    assert app.next_poll_at(bad) == world.clock.now + timedelta(minutes=5)
    app.close()


# -- a hanging feed does not hold the others up --------------------------------------------------------------


class NotingSink:
    """Passes alerts on, noting for each whether the hanging feed's request was still open then."""

    def __init__(self, sink, hanging: threading.Event) -> None:
        self.sink, self.hanging, self.while_hanging = sink, hanging, []

    def deliver(self, match, source, *, since=None):
        self.while_hanging.append((match.item.feed_id, self.hanging.is_set()))
        return self.sink.deliver(match, source, since=since)


def test_a_feed_that_hangs_until_its_timeout_does_not_hold_up_the_others(
    tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock
) -> None:
    hanging = threading.Event()

    def hangs(conn: socket.socket, stop: threading.Event) -> None:
        if server.requests == 1:  # the baseline poll: fail at once, to keep the test short
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            return
        hanging.set()
        conn.settimeout(10)
        with suppress(OSError):
            conn.recv(1)  # returns when the bot gives up and closes the connection
        hanging.clear()

    slack.add_channel(CHANNEL, "faults")
    server = FaultServer(hangs)
    urls = {name: feed_host.serve(f"/{name}", news(new=False)) for name in ("a", "b")}
    feeds = "".join(f"  - id: {name}\n    url: {url}\n" for name, url in urls.items())
    (tmp_path / "rules.yaml").write_text(
        f"settings:\n  backfill: 0\n  poll_concurrency: 2\nfeeds:\n  - id: hang\n    url: {server.url()}\n"
        f"{feeds}channels:\n  - channel: {CHANNEL}\n    feeds: [a]\n    keywords: [Nexperia]\n"
        f"  - channel: {CHANNEL}\n    feeds: [b]\n    keywords: [Huawei]\n"
    )
    env = environment_from(
        {
            "SLACK_BOT_TOKEN": slack.state.token,
            "SLACK_API_URL": slack.url,
            "BOT_RULES": str(tmp_path / "rules.yaml"),
        },
        tmp_path,
    )
    fetcher = HttpFetcher(FetchLimits(connect_timeout=1, read_timeout=0.8, total_timeout=2))
    app = build_app(env, fetcher=fetcher, now=clock, sleep=clock.sleep)
    try:
        app.poll_all_once()  # the baseline
        for name in ("a", "b"):
            feed_host.serve(f"/{name}", news())
        app.pipeline.sink = noting = NotingSink(app.pipeline.sink, hanging)
        started = time.monotonic()
        reports = app.poll_all_once()
        seconds = time.monotonic() - started
    finally:
        app.close()
        fetcher.close()
        server.close()
    assert [(r.feed_id, r.status) for r in reports] == [("hang", "error"), ("a", "ok"), ("b", "ok")]
    assert reports[0].error == "read timeout after 0.8s"
    # Feeds a and b were fetched, matched and posted while "hang" still held its connection open.
    assert sorted(noting.while_hanging) == [("a", True), ("b", True), ("b", True)]
    assert seconds < 1.8
