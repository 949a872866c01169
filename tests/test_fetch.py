"""Fetching over real loopback HTTP: conditional GET, gzip, limits, redirects, timeouts, local files."""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot.errors import FetchError
from bot.fetch import FetchLimits, HttpFetcher, max_age_seconds, retry_after_seconds
from tests.conftest import SAMPLE_FEED, scmp_bytes
from tests.feed_host import FeedHost


@pytest.fixture
def fetcher() -> Iterator[HttpFetcher]:
    f = HttpFetcher(FetchLimits(connect_timeout=2, read_timeout=0.5, total_timeout=5, max_bytes=200_000))
    yield f
    f.close()


def test_gzip_body_is_decoded_and_etag_remembered(feed_host: FeedHost, fetcher: HttpFetcher) -> None:
    url = feed_host.serve("/feed", scmp_bytes())
    result = fetcher.fetch(url)
    assert result.body == scmp_bytes()
    assert result.etag and result.last_modified
    assert feed_host.requests_for("/feed")[0]["headers"]["accept-encoding"].startswith("gzip")


def test_conditional_get_returns_not_modified(feed_host: FeedHost, fetcher: HttpFetcher) -> None:
    url = feed_host.serve("/feed", scmp_bytes())
    first = fetcher.fetch(url)
    second = fetcher.fetch(url, etag=first.etag, last_modified=first.last_modified)
    assert second.not_modified and second.body == b"" and second.etag == first.etag
    assert feed_host.requests_for("/feed")[1]["headers"]["if-none-match"] == first.etag


def test_last_modified_alone_is_used_for_conditional_get(feed_host: FeedHost, fetcher: HttpFetcher) -> None:
    feed_host.send_etags = False
    url = feed_host.serve("/feed", scmp_bytes())
    first = fetcher.fetch(url)
    assert first.etag is None and first.last_modified
    second = fetcher.fetch(url, etag=first.etag, last_modified=first.last_modified)
    assert second.not_modified
    assert feed_host.requests_for("/feed")[1]["headers"]["if-modified-since"] == first.last_modified


@pytest.mark.parametrize("status", [404, 410, 500, 503])
def test_http_errors_name_the_status(feed_host: FeedHost, fetcher: HttpFetcher, status: int) -> None:
    url = feed_host.serve("/feed", scmp_bytes())
    feed_host.fail_next("/feed", status, headers={"Retry-After": "120"})
    with pytest.raises(FetchError, match=rf"^HTTP {status}") as caught:
        fetcher.fetch(url)
    assert caught.value.status == status and caught.value.retry_after == 120


def test_a_body_over_the_cap_is_refused_even_when_gzip_makes_it_small(
    feed_host: FeedHost, fetcher: HttpFetcher
) -> None:
    bomb = b"<rss>" + b" " * 5_000_000 + b"</rss>"  # 5 MB of spaces gzips to a few KB
    url = feed_host.serve("/bomb", bomb)
    assert len(gzip.compress(bomb)) < 200_000
    with pytest.raises(FetchError, match="byte cap"):
        fetcher.fetch(url)


class _Redirector(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        hop = int(self.path.strip("/") or 0)
        self.send_response(302)
        self.send_header("Location", f"/{hop + 1}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_redirect_loop_stops_after_a_few_hops(fetcher: HttpFetcher) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(FetchError, match="more than 5 redirects"):
            fetcher.fetch(f"http://127.0.0.1:{server.server_address[1]}/0")
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_never_answers_times_out(fetcher: HttpFetcher) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection (kernel backlog) and never says a word
    try:
        with pytest.raises(FetchError, match=r"read timeout after 0\.5s"):
            fetcher.fetch(f"http://127.0.0.1:{silent.getsockname()[1]}/feed")
    finally:
        silent.close()


def test_local_paths_and_file_urls(fetcher: HttpFetcher, tmp_path: Path) -> None:
    assert fetcher.fetch(str(SAMPLE_FEED)).body == scmp_bytes()
    assert fetcher.fetch(SAMPLE_FEED.as_uri()).body == scmp_bytes()
    with pytest.raises(FetchError, match="cannot read"):
        fetcher.fetch(str(tmp_path / "missing.xml"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_accepts_seconds_or_a_date(value, expected) -> None:
    assert retry_after_seconds(value, now=lambda: 1445412480.0 + 3600) == expected


@pytest.mark.parametrize(
    ("cache_control", "age", "expected"),
    [
        ("max-age=600", None, 600.0),
        ("public, max-age=600, must-revalidate", None, 600.0),
        ('Max-Age="600"', None, 600.0),
        ("max-age=600", "100", 500.0),  # a cache has held it for 100 s already
        ("max-age=600", "9999", 0.0),
        ("max-age=0", None, 0.0),
        ("no-cache, max-age=600", None, None),
        ("no-store", None, None),
        ("s-maxage=600", None, None),  # for shared caches only
        ("max-age=soon", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_max_age_is_read_from_cache_control(cache_control, age, expected) -> None:
    assert max_age_seconds(cache_control, age) == expected
