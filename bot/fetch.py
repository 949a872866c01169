"""Gets a feed's bytes: http(s) with timeouts, conditional GET, gzip, a size cap and few redirects; or a
local file. Knows nothing of parsing: it never hands a URL to feedparser (which would fetch with no timeout).
Feeds added from Slack go through GuardedFetcher, which connects to public addresses only; the operator's
feeds connect anywhere, but a redirect off the feed's own host and port is checked the same way.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
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
    # Every wait of a fetch ends by then, headers included: a server that trickles one byte per read
    # timeout would otherwise hold a poll (and a place in poll_concurrency) as long as it likes.
    total_timeout: float = 60.0
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


def max_age_seconds(cache_control: str | None, age: str | None = None) -> float | None:
    """How long an answer stays fresh by its Cache-Control max-age, less the Age a cache says it already
    has. None without one, or when the host says not to rely on it (no-cache, no-store). s-maxage is for
    shared caches, not for a client like this one."""
    directives: dict[str, str] = {}
    for part in (cache_control or "").split(","):
        name, _, value = part.partition("=")
        directives[name.strip().lower()] = value.strip().strip('"')
    max_age = directives.get("max-age", "")
    if "no-cache" in directives or "no-store" in directives or not max_age.isdigit():
        return None
    already = int(age.strip()) if age and age.strip().isdigit() else 0
    return float(max(int(max_age) - already, 0))


class _Inflater:
    """Decodes a body's Content-Encoding with the size cap as the limit on what it produces. httpx's own
    decoder inflates each network read whole, so one 64 KiB read of a gzip bomb became some 64 MiB in
    memory before the cap could refuse it; here no more than the cap is ever decoded."""

    def __init__(self, encoding: str, max_bytes: int) -> None:
        self._encoding = encoding.strip().lower()
        if self._encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            # We only ask for gzip and deflate (Accept-Encoding), so anything else is the server's mistake.
            raise FetchError(f"unsupported Content-Encoding {encoding!r}", kind="decode")
        self._max = max_bytes
        self._zlib: Any = None
        if self._encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.size = 0

    def decode(self, data: bytes) -> bytes:
        if self._encoding == "deflate" and self._zlib is None and data:
            # "deflate" should be zlib-wrapped, but servers send raw deflate too; the zlib header tells.
            wrapped = len(data) > 1 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        if self._zlib is not None:
            try:
                data = self._zlib.decompress(data, self._max - self.size + 1)
            except zlib.error as e:
                raise FetchError(f"body could not be decoded ({self._encoding}): {e}", kind="decode") from e
        return self._counted(data)

    def finish(self) -> bytes:
        """What the decoder still holds once the body has ended."""
        if self._zlib is None:
            return b""
        return self._counted(self._zlib.flush(self._max - self.size + 1))

    def _counted(self, data: bytes) -> bytes:
        self.size += len(data)
        if self.size > self._max:
            raise FetchError(f"body is over the {self._max} byte cap", kind="too_large")
        return data


class _Deadline:
    """The current fetch's deadline, per thread (the pool's connections serve whichever thread fetches)."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._local = threading.local()

    def set(self, at: float | None) -> None:
        self._local.at = at

    def clamp(self, timeout: float | None) -> float | None:
        """`timeout`, shortened to what is left before the deadline. Never 0, which a socket would take as
        "do not block" rather than "time is up": a thousandth of a second times out as it should."""
        at: float | None = getattr(self._local, "at", None)
        if at is None:
            return timeout
        left = max(at - self._monotonic(), 0.001)
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every wait ends by the fetch's deadline. httpx's read timeout restarts with each
    byte, so without this a host trickling its status line and headers holds a poll for as long as it likes:
    the total timeout could only be checked once the headers were in."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.clamp(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.clamp(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, self._deadline.clamp(timeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend, deadline: _Deadline) -> None:
        self._backend = backend
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, self._deadline.clamp(timeout), local_address, socket_options
        )
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(path, self._deadline.clamp(timeout), socket_options)
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _transport_with_deadline(deadline: _Deadline) -> httpx.HTTPTransport:
    """httpx's own transport, its sockets wrapped so that every wait ends by the fetch's deadline. httpx
    offers no way to pass a network backend, so it is set on the pool it built; if a new httpx stores it
    elsewhere this fails at start, not silently in production."""
    transport = httpx.HTTPTransport()
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.NetworkBackend):
        raise RuntimeError("this httpx/httpcore version hides its network backend; cannot bound fetch time")
    pool._network_backend = _DeadlineBackend(backend, deadline)  # type: ignore[union-attr]
    return transport


def conditional_headers(etag: str | None, last_modified: str | None) -> dict[str, str]:
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


PUBLIC_ONLY = AddressPolicy(allow_private=False)

REQUEST_HEADERS = {"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate"}


def http_timeouts(limits: FetchLimits) -> httpx.Timeout:
    return httpx.Timeout(
        connect=limits.connect_timeout,
        read=limits.read_timeout,
        write=limits.read_timeout,
        pool=limits.connect_timeout,
    )


@contextmanager
def fetch_errors(limits: FetchLimits, monotonic: Callable[[], float], started: float) -> Iterator[None]:
    """httpx's errors as FetchErrors with a one-line reason."""
    try:
        yield
    except httpx.TooManyRedirects as e:
        raise FetchError(f"more than {limits.max_redirects} redirects", kind="redirects") from e
    except httpx.TimeoutException as e:
        if monotonic() - started >= limits.total_timeout:
            raise FetchError(f"download took over {limits.total_timeout:g}s", kind="timeout") from e
        if isinstance(e, httpx.ConnectTimeout | httpx.PoolTimeout):
            raise FetchError(f"connect timeout after {limits.connect_timeout:g}s", kind="timeout") from e
        if isinstance(e, httpx.WriteTimeout):
            raise FetchError(f"write timeout after {limits.read_timeout:g}s", kind="timeout") from e
        raise FetchError(f"read timeout after {limits.read_timeout:g}s", kind="timeout") from e
    except httpx.DecodingError as e:
        raise FetchError(f"body could not be decoded: {e}", kind="decode") from e
    except httpx.UnsupportedProtocol as e:
        raise FetchError(f"unsupported URL: {e}", kind="bad_url") from e
    except httpx.HTTPError as e:
        raise FetchError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e


def follow_redirects(
    url: str, headers: dict[str, str], limits: FetchLimits, client_for: Callable[[str, bool], httpx.Client]
) -> FetchResult:
    """GETs `url`, following up to `limits.max_redirects` redirects here rather than in httpx, so that each
    hop goes through the client `client_for(its URL, redirected)` picks, which may refuse it (FetchError)."""
    target = url
    for hop in range(limits.max_redirects + 1):
        with client_for(target, hop > 0).stream("GET", target, headers=headers) as response:
            if not response.has_redirect_location:
                return read_response(response, headers, limits)
            target = str(response.url.join(response.headers["Location"]))
    raise FetchError(f"more than {limits.max_redirects} redirects", kind="redirects")


def host_and_port(url: str) -> tuple[str, int | None] | None:
    """Where a URL connects to, as httpx (which connects) reads it: host and port, the scheme's default
    port filled in. None for a URL httpx cannot parse."""
    try:
        parts = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.host.lower(), parts.port or default


def read_response(response: httpx.Response, sent_headers: dict[str, str], limits: FetchLimits) -> FetchResult:
    """A final (not redirecting) response as a FetchResult: 304, an HTTP error, or the body, decoded within
    the size cap (the fetch's deadline bounds the time: see _Deadline)."""
    final_url = str(response.url)
    max_age = max_age_seconds(response.headers.get("Cache-Control"), response.headers.get("Age"))
    if response.status_code == 304:
        return FetchResult(
            not_modified=True,
            etag=response.headers.get("ETag", sent_headers.get("If-None-Match")),
            last_modified=response.headers.get("Last-Modified", sent_headers.get("If-Modified-Since")),
            url=final_url,
            max_age=max_age,
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
    inflater = _Inflater(response.headers.get("Content-Encoding", ""), limits.max_bytes)
    chunks = [inflater.decode(chunk) for chunk in response.iter_raw()]
    chunks.append(inflater.finish())
    return FetchResult(
        not_modified=False,
        body=b"".join(chunks),
        headers={k.lower(): v for k, v in response.headers.items()},
        etag=response.headers.get("ETag"),
        last_modified=response.headers.get("Last-Modified"),
        url=final_url,
        max_age=max_age,
    )


class HttpFetcher:
    """The operator's feeds (rules.yaml). Their host may be anywhere, private addresses included: the
    operator chose it. A redirect that leaves that host or port is the feed host's choice, not the
    operator's, so it is checked like a feed added from Slack (`redirect_policy`; see GuardedFetcher):
    otherwise a feed's author could have the bot fetch, archive and show what answers inside its network.
    One shared connection pool; safe to call from several scheduler threads at once."""

    def __init__(
        self,
        limits: FetchLimits | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        resolver: Resolver | None = None,
        network: httpcore.NetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits or FetchLimits()
        self._monotonic = monotonic
        self._deadline = _Deadline(monotonic)
        self._client = httpx.Client(
            headers=REQUEST_HEADERS,
            timeout=http_timeouts(self.limits),
            follow_redirects=False,
            transport=transport or _transport_with_deadline(self._deadline),
        )
        self._checked_network = (resolver or resolve_host, network, ssl_context)
        # Built at the first redirect off a feed's host: most bots never see one, and each costs a TLS
        # context (some 50 ms) at every start.
        self._checked: dict[AddressPolicy, httpx.Client] = {}
        self._checked_lock = threading.Lock()

    def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        redirect_policy: AddressPolicy = PUBLIC_ONLY,
    ) -> FetchResult:
        if is_local(url):
            return self._read_file(url)
        headers = conditional_headers(etag, last_modified)
        started = self._monotonic()
        self._deadline.set(started + self.limits.total_timeout)
        origin = host_and_port(url)

        def client_for(target: str, redirected: bool) -> httpx.Client:
            if host_and_port(target) == origin:
                return self._client
            check_web_url(target, redirected=True)
            return self._checked_client(redirect_policy)

        try:
            with fetch_errors(self.limits, self._monotonic, started):
                return follow_redirects(url, headers, self.limits, client_for)
        except FetchError as e:
            if e.kind != "refused_address":  # only a hop off the feed's host is refused an address
                raise
            raise FetchError(f"redirected off the feed's host: {e.reason}", kind=e.kind) from e
        finally:
            self._deadline.set(None)

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

    def _checked_client(self, policy: AddressPolicy) -> httpx.Client:
        with self._checked_lock:
            if not self._checked:
                self._checked = checked_clients(self.limits, self._deadline, *self._checked_network)
            return self._checked[policy]

    def close(self) -> None:
        self._client.close()
        with self._checked_lock:
            for client in self._checked.values():
                client.close()


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


def checked_clients(
    limits: FetchLimits,
    deadline: _Deadline,
    resolver: Resolver,
    network: httpcore.NetworkBackend | None,
    ssl_context: ssl.SSLContext | None,
) -> dict[AddressPolicy, httpx.Client]:
    """One client per policy, so a pooled connection is only reused under the policy that checked it. Each
    connects only to addresses its policy allows (CheckedNetwork), every wait ends by the fetch's deadline
    (see _DeadlineStream), and no proxy comes from the environment (a proxy would look the name up itself)."""
    context = ssl_context or httpx.create_ssl_context(trust_env=False)
    sockets = _DeadlineBackend(network or httpcore.SyncBackend(), deadline)
    return {
        policy: httpx.Client(
            headers=REQUEST_HEADERS,
            timeout=http_timeouts(limits),
            follow_redirects=False,
            transport=CheckedTransport(CheckedNetwork(policy, resolver, sockets), context),
            trust_env=False,
        )
        for policy in (AddressPolicy(allow_private=False), AddressPolicy(allow_private=True))
    }


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
        self._deadline = _Deadline(monotonic)
        self._clients = checked_clients(self.limits, self._deadline, resolver, network, ssl_context)

    def fetch(
        self, url: str, *, policy: AddressPolicy, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        headers = conditional_headers(etag, last_modified)
        client = self._clients[policy]
        started = self._monotonic()
        self._deadline.set(started + self.limits.total_timeout)  # for all the hops together

        def client_for(target: str, redirected: bool) -> httpx.Client:
            check_web_url(target, redirected=redirected)
            return client

        try:
            with fetch_errors(self.limits, self._monotonic, started):
                return follow_redirects(url, headers, self.limits, client_for)
        finally:
            self._deadline.set(None)

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
