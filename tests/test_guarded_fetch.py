"""Feeds added from Slack are fetched only from public addresses: the URL's host, every redirect's, and the
address actually connected to, whatever DNS answers the second time. Real HTTP on loopback; the resolver
and the last routing step are the test's (tests/fake_network.py), the checks are the bot's."""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot.addresses import AddressPolicy
from bot.errors import FetchError
from bot.fetch import FetchLimits, GuardedFetcher, resolve_host
from tests.conftest import scmp_bytes
from tests.fake_network import FakeInternet, FakeResolver
from tests.feed_host import FeedHost, running_feed_host

PUBLIC, OTHER_PUBLIC = "93.184.216.34", "93.184.216.35"
STRICT, PRIVATE_ALLOWED = AddressPolicy(), AddressPolicy(allow_private=True)
TLS = Path(__file__).resolve().parent / "tls"


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
def internet() -> FakeInternet:
    return FakeInternet()


@pytest.fixture
def fetcher(resolver: FakeResolver, internet: FakeInternet) -> Iterator[GuardedFetcher]:
    f = GuardedFetcher(
        FetchLimits(connect_timeout=2, read_timeout=2, total_timeout=5),
        resolver=resolver,
        network=internet,
    )
    yield f
    f.close()


@pytest.fixture
def internal_host() -> Iterator[FeedHost]:
    """A server on the bot's own network that a feed added from Slack must never reach."""
    with running_feed_host() as host:
        host.serve("/secret", scmp_bytes())
        yield host


def port_of(host: FeedHost) -> int:
    return int(host.url("/").split(":")[2].split("/")[0])


def test_a_public_name_is_fetched_from_the_address_that_was_checked(
    fetcher: GuardedFetcher, resolver: FakeResolver, internet: FakeInternet, feed_host: FeedHost
) -> None:
    internet.route(PUBLIC, feed_host.serve("/feed", scmp_bytes()))
    resolver.answer("feeds.example", PUBLIC)
    result = fetcher.fetch(f"http://feeds.example:{port_of(feed_host)}/feed", policy=STRICT)
    assert result.body == scmp_bytes()
    assert internet.connections == [PUBLIC]
    assert resolver.lookups == ["feeds.example"]
    [request] = feed_host.requests_for("/feed")
    assert request["headers"]["host"] == f"feeds.example:{port_of(feed_host)}"  # the name, not the address


def test_a_name_that_resolves_to_loopback_is_refused_before_any_connection(
    fetcher: GuardedFetcher, resolver: FakeResolver, internet: FakeInternet, internal_host: FeedHost
) -> None:
    resolver.answer("intranet.example", "127.0.0.1")
    with pytest.raises(FetchError) as refused:
        fetcher.fetch(f"http://intranet.example:{port_of(internal_host)}/secret", policy=STRICT)
    assert str(refused.value) == (
        "not a public address: intranet.example resolves to 127.0.0.1, a loopback address"
    )
    assert internet.connections == [] and internal_host.requests == []


def test_one_private_answer_among_public_ones_refuses_the_host(
    fetcher: GuardedFetcher, resolver: FakeResolver, internet: FakeInternet
) -> None:
    resolver.answer("mixed.example", PUBLIC, "10.0.0.7")
    with pytest.raises(FetchError, match=re.escape("mixed.example resolves to 10.0.0.7, a private address")):
        fetcher.fetch("http://mixed.example/feed", policy=STRICT)
    assert internet.connections == []


@pytest.mark.parametrize(
    ("host", "refusal"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("[::1]", "::1 is a loopback address"),
        ("2130706433", "127.0.0.1 is a loopback address"),
        ("0x7f.1", "127.0.0.1 is a loopback address"),
        ("[::ffff:127.0.0.1]", "a loopback address (the IPv4-mapped form of 127.0.0.1)"),
        ("[::ffff:0:127.0.0.1]", "a loopback address (the IPv4-translated form of 127.0.0.1)"),
        ("169.254.169.254", "169.254.169.254 is a cloud metadata address"),
        ("[fd00:ec2::254]", "fd00:ec2::254 is a cloud metadata address"),
        ("0.0.0.0", "0.0.0.0 is an unspecified address"),
        ("[::]", ":: is an unspecified address"),
        ("192.168.1.1", "192.168.1.1 is a private address"),
    ],
)
def test_addresses_in_the_url_are_checked_without_dns(
    fetcher: GuardedFetcher,
    resolver: FakeResolver,
    internet: FakeInternet,
    internal_host: FeedHost,
    host: str,
    refusal: str,
) -> None:
    with pytest.raises(FetchError, match="^not a public address: .*" + re.escape(refusal)):
        fetcher.fetch(f"http://{host}:{port_of(internal_host)}/secret", policy=STRICT)
    assert resolver.lookups == [] and internet.connections == [] and internal_host.requests == []


def test_a_redirect_from_an_allowed_host_to_a_private_address_is_refused(
    fetcher: GuardedFetcher,
    resolver: FakeResolver,
    internet: FakeInternet,
    feed_host: FeedHost,
    internal_host: FeedHost,
) -> None:
    internet.route(PUBLIC, feed_host.url("/"))
    resolver.answer("feeds.example", PUBLIC)
    feed_host.redirect("/feed", internal_host.url("/secret"))
    with pytest.raises(FetchError, match=r"^not a public address: 127\.0\.0\.1 is a loopback address$"):
        fetcher.fetch("http://feeds.example/feed", policy=STRICT)
    assert len(feed_host.requests_for("/feed")) == 1  # the first hop was fetched...
    assert internal_host.requests == []  # ...and the second never left the bot
    assert internet.connections == [PUBLIC]


def test_a_redirect_to_a_name_of_a_private_address_is_refused(
    fetcher: GuardedFetcher, resolver: FakeResolver, internet: FakeInternet, feed_host: FeedHost
) -> None:
    internet.route(PUBLIC, feed_host.url("/"))
    resolver.answer("feeds.example", PUBLIC)
    resolver.answer("metadata.example", "169.254.169.254")
    feed_host.redirect("/feed", "http://metadata.example/latest/meta-data/")
    with pytest.raises(
        FetchError, match=re.escape("metadata.example resolves to 169.254.169.254, a cloud metadata")
    ):
        fetcher.fetch("http://feeds.example/feed", policy=STRICT)
    assert internet.connections == [PUBLIC]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("file:///etc/passwd", "redirected to a refused URL: file paths are for rules.yaml"),
        ("gopher://feeds.example/", "redirected to a refused URL: only http and https URLs"),
        ("http://admin:hunter2@feeds.example/", "redirected to a refused URL: URLs with a user name"),
    ],
)
def test_a_redirect_to_another_scheme_or_to_credentials_is_refused(
    fetcher: GuardedFetcher,
    resolver: FakeResolver,
    internet: FakeInternet,
    feed_host: FeedHost,
    location: str,
    reason: str,
) -> None:
    internet.route(PUBLIC, feed_host.url("/"))
    resolver.answer("feeds.example", PUBLIC)
    feed_host.redirect("/feed", location)
    with pytest.raises(FetchError, match="^" + reason) as refused:
        fetcher.fetch("http://feeds.example/feed", policy=STRICT)
    assert "hunter2" not in str(refused.value)


def test_redirects_between_public_hosts_are_followed_each_hop_checked(
    fetcher: GuardedFetcher, resolver: FakeResolver, internet: FakeInternet, feed_host: FeedHost
) -> None:
    with running_feed_host() as second_host:
        internet.route(PUBLIC, feed_host.url("/"))
        internet.route(OTHER_PUBLIC, second_host.serve("/moved", scmp_bytes()))
        resolver.answer("old.example", PUBLIC)
        resolver.answer("new.example", OTHER_PUBLIC)
        feed_host.redirect("/feed", "http://new.example/moved", status=301)
        result = fetcher.fetch("http://old.example/feed", policy=STRICT)
        assert result.body == scmp_bytes() and result.url == "http://new.example/moved"
        assert resolver.lookups == ["old.example", "new.example"]
        assert internet.connections == [PUBLIC, OTHER_PUBLIC]


def test_a_redirect_loop_stops_after_a_few_hops(
    fetcher: GuardedFetcher, resolver: FakeResolver, internet: FakeInternet, feed_host: FeedHost
) -> None:
    internet.route(PUBLIC, feed_host.url("/"))
    resolver.answer("loop.example", PUBLIC)
    feed_host.redirect("/a", "/b")
    feed_host.redirect("/b", "/a")
    with pytest.raises(FetchError, match=r"^more than 5 redirects$"):
        fetcher.fetch("http://loop.example/a", policy=STRICT)
    assert len(feed_host.requests) == 6


def test_dns_that_changes_its_answer_never_leads_to_the_private_address(
    fetcher: GuardedFetcher,
    resolver: FakeResolver,
    internet: FakeInternet,
    feed_host: FeedHost,
    internal_host: FeedHost,
) -> None:
    """DNS rebinding: the name is public when checked and loopback a moment later. The bot connects to the
    address it checked, so the second answer only matters to the next connection, which it refuses."""
    internet.route(PUBLIC, feed_host.serve("/secret", scmp_bytes()))
    resolver.answer("rebind.example", PUBLIC)
    resolver.then("rebind.example", "127.0.0.1")
    url = f"http://rebind.example:{port_of(internal_host)}/secret"  # the internal host's own port

    assert fetcher.fetch(url, policy=STRICT).body == scmp_bytes()
    assert resolver.lookups == ["rebind.example"]  # one lookup per connection, checked and used
    with pytest.raises(
        FetchError, match=re.escape("rebind.example resolves to 127.0.0.1, a loopback address")
    ):
        fetcher.fetch(url, policy=STRICT)

    assert "127.0.0.1" not in internet.connections
    assert internal_host.requests == []
    assert len(feed_host.requests_for("/secret")) == 1


def test_the_next_checked_address_is_tried_when_one_does_not_answer(
    fetcher: GuardedFetcher, resolver: FakeResolver, internet: FakeInternet, feed_host: FeedHost
) -> None:
    internet.route(OTHER_PUBLIC, feed_host.serve("/feed", scmp_bytes()))
    resolver.answer("feeds.example", PUBLIC, OTHER_PUBLIC)  # PUBLIC has no route: connecting fails
    assert fetcher.fetch("http://feeds.example/feed", policy=STRICT).body == scmp_bytes()
    assert internet.connections == [PUBLIC, OTHER_PUBLIC]


def test_allowing_private_feeds_reaches_loopback_but_never_cloud_metadata(
    fetcher: GuardedFetcher, resolver: FakeResolver, internal_host: FeedHost
) -> None:
    result = fetcher.fetch(internal_host.url("/secret"), policy=PRIVATE_ALLOWED)
    assert result.body == scmp_bytes()
    resolver.answer("metadata.example", "169.254.169.254")
    with pytest.raises(FetchError, match="a cloud metadata address"):
        fetcher.fetch("http://metadata.example/latest/", policy=PRIVATE_ALLOWED)
    with pytest.raises(FetchError, match="a loopback address"):
        fetcher.fetch(internal_host.url("/secret"), policy=STRICT)  # the strict policy is unchanged


def test_a_name_that_does_not_resolve_is_one_line(fetcher: GuardedFetcher) -> None:
    with pytest.raises(FetchError, match=r"^cannot resolve nowhere.example: no address$"):
        fetcher.fetch("http://nowhere.example/feed", policy=STRICT)


def test_the_system_resolver_is_checked_the_same_way(internal_host: FeedHost) -> None:
    """The production defaults: getaddrinfo (localhost comes from the hosts file, not the network)."""
    assert {"127.0.0.1", "::1"} & set(resolve_host("localhost"))
    fetcher = GuardedFetcher(FetchLimits(connect_timeout=2, read_timeout=2, total_timeout=5))
    try:
        with pytest.raises(
            FetchError, match=r"^not a public address: localhost resolves to (127\.0\.0\.1|::1)"
        ):
            fetcher.fetch(f"http://localhost:{port_of(internal_host)}/secret", policy=STRICT)
    finally:
        fetcher.close()
    assert internal_host.requests == []


# -- TLS: the connection goes to the checked address, the certificate is checked against the name --------


class _TlsFeedServer:
    """An HTTPS feed server on loopback with a certificate for feeds.example, signed by tests/tls/test-ca.pem.
    It records the server name each client asked for (SNI) and each request's Host header."""

    def __init__(self) -> None:
        self.server_names: list[str | None] = []
        self.hosts: list[str] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(TLS / "feeds.example.pem")
        context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hosts.append(self.headers["Host"])
                body = scmp_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tls_server() -> Iterator[_TlsFeedServer]:
    server = _TlsFeedServer()
    yield server
    server.stop()


def test_https_connects_to_the_checked_address_and_verifies_the_certificate_for_the_name(
    resolver: FakeResolver, internet: FakeInternet, tls_server: _TlsFeedServer
) -> None:
    internet.route(PUBLIC, f"https://127.0.0.1:{tls_server.port}/")
    resolver.answer("feeds.example", PUBLIC)
    resolver.answer("impostor.example", PUBLIC)
    trusting_the_test_ca = ssl.create_default_context(cafile=str(TLS / "test-ca.pem"))
    fetcher = GuardedFetcher(resolver=resolver, network=internet, ssl_context=trusting_the_test_ca)
    try:
        result = fetcher.fetch(f"https://feeds.example:{tls_server.port}/feed", policy=STRICT)
        assert result.body == scmp_bytes()
        assert tls_server.server_names == ["feeds.example"]  # SNI names the host, not the address
        assert tls_server.hosts == [f"feeds.example:{tls_server.port}"]
        # Same address, another name: the certificate (for feeds.example) does not match, so no fetch.
        with pytest.raises(FetchError, match="certificate verify failed") as refused:
            fetcher.fetch("https://impostor.example/feed", policy=STRICT)
        assert "\n" not in str(refused.value)
        assert tls_server.hosts == [f"feeds.example:{tls_server.port}"]
    finally:
        fetcher.close()
