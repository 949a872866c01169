"""Gets a feed's bytes: http(s) with timeouts, conditional GET, gzip, a size cap and few redirects; or a
local file. Knows nothing of parsing: it never hands a URL to feedparser (which would fetch with no timeout).
"""

from __future__ import annotations

import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpcore
import httpx

from bot import __version__
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
            raise FetchError(f"unsupported Content-Encoding {encoding!r}")
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
                raise FetchError(f"body could not be decoded ({self._encoding}): {e}") from e
        return self._counted(data)

    def finish(self) -> bytes:
        """What the decoder still holds once the body has ended."""
        if self._zlib is None:
            return b""
        return self._counted(self._zlib.flush(self._max - self.size + 1))

    def _counted(self, data: bytes) -> bytes:
        self.size += len(data)
        if self.size > self._max:
            raise FetchError(f"body is over the {self._max} byte cap")
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
        self._deadline = _Deadline(monotonic)
        self._client = httpx.Client(
            headers={"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate"},
            timeout=httpx.Timeout(
                connect=self.limits.connect_timeout,
                read=self.limits.read_timeout,
                write=self.limits.read_timeout,
                pool=self.limits.connect_timeout,
            ),
            follow_redirects=True,
            max_redirects=self.limits.max_redirects,
            transport=transport or _transport_with_deadline(self._deadline),
        )

    def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        if is_local(url):
            return self._read_file(url)
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        started = self._monotonic()
        self._deadline.set(started + self.limits.total_timeout)
        try:
            return self._get(url, headers)
        except httpx.TooManyRedirects as e:
            raise FetchError(f"more than {self.limits.max_redirects} redirects") from e
        except httpx.TimeoutException as e:
            if self._monotonic() - started >= self.limits.total_timeout:
                raise FetchError(f"download took over {self.limits.total_timeout:g}s") from e
            if isinstance(e, httpx.ConnectTimeout | httpx.PoolTimeout):
                raise FetchError(f"connect timeout after {self.limits.connect_timeout:g}s") from e
            if isinstance(e, httpx.WriteTimeout):
                raise FetchError(f"write timeout after {self.limits.read_timeout:g}s") from e
            raise FetchError(f"read timeout after {self.limits.read_timeout:g}s") from e
        except httpx.UnsupportedProtocol as e:
            raise FetchError(f"unsupported URL: {e}") from e
        except httpx.HTTPError as e:
            raise FetchError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
        finally:
            self._deadline.set(None)

    def _get(self, url: str, headers: dict[str, str]) -> FetchResult:
        with self._client.stream("GET", url, headers=headers) as response:
            final_url = str(response.url)
            max_age = max_age_seconds(response.headers.get("Cache-Control"), response.headers.get("Age"))
            if response.status_code == 304:
                return FetchResult(
                    not_modified=True,
                    etag=response.headers.get("ETag", headers.get("If-None-Match")),
                    last_modified=response.headers.get("Last-Modified", headers.get("If-Modified-Since")),
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
            if declared.isdigit() and int(declared) > self.limits.max_bytes:  # compressed size: a lower bound
                raise FetchError(f"body of {declared} bytes is over the {self.limits.max_bytes} byte cap")
            inflater = _Inflater(response.headers.get("Content-Encoding", ""), self.limits.max_bytes)
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

    def _read_file(self, url: str) -> FetchResult:
        path = local_path(url)
        try:
            size = path.stat().st_size
            if size > self.limits.max_bytes:
                raise FetchError(f"{path} is {size} bytes, over the {self.limits.max_bytes} byte cap")
            body = path.read_bytes()
        except OSError as e:
            raise FetchError(f"cannot read {path}: {e.strerror or e}") from e
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
