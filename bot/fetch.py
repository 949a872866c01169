"""Gets a feed's bytes: http(s) with timeouts, conditional GET, gzip, a size cap and few redirects; or a
local file. Knows nothing of parsing: it never hands a URL to feedparser (which would fetch with no timeout).
Feeds added from Slack go through GuardedFetcher, which connects to public addresses only.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpcore
import httpx

from bot import __version__
from bot.addresses import AddressPolicy, IPAddress, ip_literal, url_problem
from bot.errors import FetchError
from bot.model import FetchResult

USER_AGENT = f"feedwatch/{__version__} (Slack alert bot; +https://pypi.org/project/feedwatch/)"
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, application/xml;q=0.9, "
    "text/xml;q=0.9, */*;q=0.5"
)


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 60.0  # a server that trickles one byte per read timeout would otherwise hold on
    max_bytes: int = 10 * 1024 * 1024  # after gzip decoding: a small gzip bomb cannot fill memory
    max_redirects: int = 5


def is_local(url: str) -> bool:
    scheme = urlsplit(url).scheme.lower()
    return scheme in ("", "file") or (len(scheme) == 1 and url[1:3] in (":\\", ":/"))  # C:\ paths


def local_path(url: str) -> Path:
    if url.lower().startswith("file:"):
        return Path(unquote(urlsplit(url).path))
    return Path(url)


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now())
    except (TypeError, ValueError):
        return None


def conditional_headers(etag: str | None, last_modified: str | None) -> dict[str, str]:
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


REQUEST_HEADERS = {"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate"}


def http_timeouts(limits: FetchLimits) -> httpx.Timeout:
    return httpx.Timeout(
        connect=limits.connect_timeout,
        read=limits.read_timeout,
        write=limits.read_timeout,
        pool=limits.connect_timeout,
    )


@contextmanager
def fetch_errors(limits: FetchLimits) -> Iterator[None]:
    """httpx's errors as FetchErrors with a one-line reason."""
    try:
        yield
    except httpx.TooManyRedirects as e:
        raise FetchError(f"more than {limits.max_redirects} redirects", kind="redirects") from e
    except httpx.ConnectTimeout as e:
        raise FetchError(f"connect timeout after {limits.connect_timeout:g}s", kind="timeout") from e
    except httpx.ReadTimeout as e:
        raise FetchError(f"read timeout after {limits.read_timeout:g}s", kind="timeout") from e
    except httpx.DecodingError as e:
        raise FetchError(f"body could not be decoded: {e}", kind="decode") from e
    except httpx.UnsupportedProtocol as e:
        raise FetchError(f"unsupported URL: {e}", kind="bad_url") from e
    except httpx.HTTPError as e:
        raise FetchError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e


def read_response(
    response: httpx.Response,
    sent_headers: dict[str, str],
    limits: FetchLimits,
    monotonic: Callable[[], float],
    started: float,
) -> FetchResult:
    """A final (not redirecting) response as a FetchResult: 304, an HTTP error, or the body within the
    size and time caps."""
    final_url = str(response.url)
    if response.status_code == 304:
        return FetchResult(
            not_modified=True,
            etag=response.headers.get("ETag", sent_headers.get("If-None-Match")),
            last_modified=response.headers.get("Last-Modified", sent_headers.get("If-Modified-Since")),
            url=final_url,
        )
    if response.status_code != 200:
        raise FetchError(
            f"HTTP {response.status_code} {response.reason_phrase}".strip(),
            status=response.status_code,
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:  # compressed size: a lower bound
        raise FetchError(
            f"body of {declared} bytes is over the {limits.max_bytes} byte cap", kind="too_large"
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limits.max_bytes:
            raise FetchError(f"body is over the {limits.max_bytes} byte cap", kind="too_large")
        if monotonic() - started > limits.total_timeout:
            raise FetchError(f"download took over {limits.total_timeout:g}s", kind="timeout")
        chunks.append(chunk)
    return FetchResult(
        not_modified=False,
        body=b"".join(chunks),
        headers={k.lower(): v for k, v in response.headers.items()},
        etag=response.headers.get("ETag"),
        last_modified=response.headers.get("Last-Modified"),
        url=final_url,
    )


class HttpFetcher:
    """One shared connection pool; safe to call from several scheduler threads at once."""

    def __init__(
        self,
        limits: FetchLimits | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or FetchLimits()
        self._monotonic = monotonic
        self._client = httpx.Client(
            headers=REQUEST_HEADERS,
            timeout=http_timeouts(self.limits),
            follow_redirects=True,
            max_redirects=self.limits.max_redirects,
            transport=transport,
        )

    def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        if is_local(url):
            return self._read_file(url)
        headers = conditional_headers(etag, last_modified)
        with fetch_errors(self.limits):
            return self._get(url, headers)

    def _get(self, url: str, headers: dict[str, str]) -> FetchResult:
        started = self._monotonic()
        with self._client.stream("GET", url, headers=headers) as response:
            return read_response(response, headers, self.limits, self._monotonic, started)

    def _read_file(self, url: str) -> FetchResult:
        path = local_path(url)
        try:
            size = path.stat().st_size
            if size > self.limits.max_bytes:
                raise FetchError(
                    f"{path} is {size} bytes, over the {self.limits.max_bytes} byte cap", kind="too_large"
                )
            body = path.read_bytes()
        except OSError as e:
            raise FetchError(f"cannot read {path}: {e.strerror or e}", kind="file") from e
        # A file has no Content-Type; without one feedparser flags every local feed as suspect. The XML
        # declaration inside still decides the encoding.
        return FetchResult(
            not_modified=False,
            body=body,
            headers={"content-type": "application/xml"},
            url=path.resolve().as_uri(),
        )

    def close(self) -> None:
        self._client.close()


# -- feeds added from Slack ------------------------------------------------------------------------------

Resolver = Callable[[str], Sequence[str]]
"""A host name -> the addresses it has, as text. Injectable, so tests answer as DNS would."""


def resolve_host(host: str) -> list[str]:
    """The system resolver (getaddrinfo): every address of the name, in the order it gives them."""
    try:
        answers = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise FetchError(f"cannot resolve {host}: {getattr(e, 'strerror', None) or e}", kind="dns") from e
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


class CheckedNetwork(httpcore.NetworkBackend):
    """httpcore's way to the network for feeds added from Slack. Each connection resolves its host once,
    refuses it unless every answer passes the policy, and connects to an address that passed: never to
    the name, which a second lookup could answer differently (DNS rebinding). TLS still names the host:
    httpcore starts TLS with the URL's host for SNI and the certificate check, whatever address the
    connection went to."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver, network: httpcore.NetworkBackend) -> None:
        self._policy = policy
        self._resolver = resolver
        self._network = network

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for address in self.checked_addresses(host):
            try:
                return self._network.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                failure = e  # every address passed the check: try the next
        assert failure is not None  # checked_addresses never returns an empty list
        raise failure

    def checked_addresses(self, host: str) -> list[IPAddress]:
        """The host's addresses when every one of them passes the policy; raises FetchError otherwise."""
        literal = ip_literal(host)
        if literal is not None:
            refusal = self._policy.refusal(literal)
            if refusal is not None:
                raise FetchError(f"not a public address: {refusal}", kind="refused_address")
            return [literal]
        addresses = []
        for answer in self._resolver(host):
            address = ip_literal(answer)
            if address is None:
                raise FetchError(
                    f"cannot resolve {host}: the resolver answered with something else", kind="dns"
                )
            addresses.append(address)
        if not addresses:
            raise FetchError(f"cannot resolve {host}: no address", kind="dns")
        for address in addresses:
            refusal = self._policy.refusal(address)
            if refusal is not None:
                raise FetchError(
                    f"not a public address: {host} resolves to {address}, {refusal.description}",
                    kind="refused_address",
                )
        return addresses

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise FetchError("feeds are not read from local sockets", kind="refused_address")

    def sleep(self, seconds: float) -> None:
        self._network.sleep(seconds)


class CheckedTransport(httpx.HTTPTransport):
    """httpx's own transport (request and error mapping included), connecting through `network`. httpx 0.28
    takes no network backend (encode/httpx#3749 proposes one), so the pool it builds is replaced by the
    same pool on that network."""

    def __init__(self, network: httpcore.NetworkBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        limits = httpx.Limits()
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=network,
        )


class GuardedFetcher:
    """Fetches the feeds added from Slack, whose URLs nobody vetted: http(s) only, no credentials, each
    redirect followed here (not by httpx) and checked like the first URL, and connections only to the
    addresses the policy allows (CheckedNetwork). No local files, and no proxy from the environment (a
    proxy would look the name up itself). Safe to share between threads."""

    def __init__(
        self,
        limits: FetchLimits | None = None,
        *,
        resolver: Resolver = resolve_host,
        network: httpcore.NetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or FetchLimits()
        self._monotonic = monotonic
        context = ssl_context or httpx.create_ssl_context(trust_env=False)
        sockets = network or httpcore.SyncBackend()
        # One client per policy, so a pooled connection is only reused under the policy that checked it.
        self._clients = {
            policy: self._client(CheckedTransport(CheckedNetwork(policy, resolver, sockets), context))
            for policy in (AddressPolicy(allow_private=False), AddressPolicy(allow_private=True))
        }

    def _client(self, transport: httpx.BaseTransport) -> httpx.Client:
        return httpx.Client(
            headers=REQUEST_HEADERS,
            timeout=http_timeouts(self.limits),
            follow_redirects=False,
            transport=transport,
            trust_env=False,
        )

    def fetch(
        self, url: str, *, policy: AddressPolicy, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        headers = conditional_headers(etag, last_modified)
        client = self._clients[policy]
        started = self._monotonic()
        target = url
        with fetch_errors(self.limits):
            for hop in range(self.limits.max_redirects + 1):
                check_web_url(target, redirected=hop > 0)
                with client.stream("GET", target, headers=headers) as response:
                    if not response.has_redirect_location:
                        return read_response(response, headers, self.limits, self._monotonic, started)
                    target = str(response.url.join(response.headers["Location"]))
        raise FetchError(f"more than {self.limits.max_redirects} redirects", kind="redirects")

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def check_web_url(url: str, *, redirected: bool = False) -> None:
    """Raises FetchError unless a feed added from Slack may use the URL, as httpx parses it (the parser
    that fetches it). The URL itself is never in the message: it may hold a token."""
    try:
        parts = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise FetchError(
            "redirected to an invalid URL" if redirected else "invalid URL", kind="bad_url"
        ) from e
    problem = url_problem(parts.scheme, parts.host, bool(parts.userinfo))
    if problem is not None:
        raise FetchError(f"redirected to a refused URL: {problem}" if redirected else problem, kind="bad_url")
