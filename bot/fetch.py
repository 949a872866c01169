"""Gets a feed's bytes: http(s) with timeouts, conditional GET, gzip, a size cap and few redirects; or a
local file. Knows nothing of parsing: it never hands a URL to feedparser (which would fetch with no timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

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
            headers={"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate"},
            timeout=httpx.Timeout(
                connect=self.limits.connect_timeout,
                read=self.limits.read_timeout,
                write=self.limits.read_timeout,
                pool=self.limits.connect_timeout,
            ),
            follow_redirects=True,
            max_redirects=self.limits.max_redirects,
            transport=transport,
        )

    def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        if is_local(url):
            return self._read_file(url)
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            return self._get(url, headers)
        except httpx.TooManyRedirects as e:
            raise FetchError(f"more than {self.limits.max_redirects} redirects", kind="redirects") from e
        except httpx.ConnectTimeout as e:
            raise FetchError(f"connect timeout after {self.limits.connect_timeout:g}s", kind="timeout") from e
        except httpx.ReadTimeout as e:
            raise FetchError(f"read timeout after {self.limits.read_timeout:g}s", kind="timeout") from e
        except httpx.DecodingError as e:
            raise FetchError(f"body could not be decoded: {e}", kind="decode") from e
        except httpx.UnsupportedProtocol as e:
            raise FetchError(f"unsupported URL: {e}", kind="bad_url") from e
        except httpx.HTTPError as e:
            raise FetchError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e

    def _get(self, url: str, headers: dict[str, str]) -> FetchResult:
        started = self._monotonic()
        with self._client.stream("GET", url, headers=headers) as response:
            final_url = str(response.url)
            if response.status_code == 304:
                return FetchResult(
                    not_modified=True,
                    etag=response.headers.get("ETag", headers.get("If-None-Match")),
                    last_modified=response.headers.get("Last-Modified", headers.get("If-Modified-Since")),
                    url=final_url,
                )
            if response.status_code != 200:
                raise FetchError(
                    f"HTTP {response.status_code} {response.reason_phrase}".strip(),
                    status=response.status_code,
                    retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.limits.max_bytes:  # compressed size: a lower bound
                raise FetchError(
                    f"body of {declared} bytes is over the {self.limits.max_bytes} byte cap", kind="too_large"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.limits.max_bytes:
                    raise FetchError(f"body is over the {self.limits.max_bytes} byte cap", kind="too_large")
                if self._monotonic() - started > self.limits.total_timeout:
                    raise FetchError(f"download took over {self.limits.total_timeout:g}s", kind="timeout")
                chunks.append(chunk)
            return FetchResult(
                not_modified=False,
                body=b"".join(chunks),
                headers={k.lower(): v for k, v in response.headers.items()},
                etag=response.headers.get("ETag"),
                last_modified=response.headers.get("Last-Modified"),
                url=final_url,
            )

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
