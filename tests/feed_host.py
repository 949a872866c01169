"""A feed host on loopback serving real feed files, with ETag and Last-Modified support and gzip."""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Resource:
    body: bytes
    etag: str
    last_modified: str
    content_type: str = "application/rss+xml; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)  # more, on 200 and 304 alike (Cache-Control)


class FeedHost:
    def __init__(self) -> None:
        self._resources: dict[str, Resource] = {}
        self._failures: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self._redirects: dict[str, tuple[int, str]] = {}
        self._each: dict[str, Callable[[int], bytes]] = {}  # a new body for each request (see serve_each)
        self._trickles: dict[str, float] = {}  # path -> seconds between bytes (see trickle)
        self.stopping = threading.Event()  # set by stop(): trickling answers end
        self.requests: list[dict[str, Any]] = []
        self.honour_conditional = True
        self.send_etags = True  # False: only Last-Modified, as some servers do
        self._lock = threading.Lock()
        self._version = 0
        handler = type("Handler", (_Handler,), {"host": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def start(self) -> FeedHost:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def serve(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/rss+xml; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> str:
        with self._lock:
            self._version += 1
            etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
            self._resources[path] = Resource(
                body,
                etag,
                formatdate(1_700_000_000 + self._version, usegmt=True),
                content_type,
                headers or {},
            )
        return self.url(path)

    def fail_next(
        self, path: str, status: int, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        with self._lock:
            self._failures.setdefault(path, []).extend([(status, headers or {})] * times)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        with self._lock:
            self._redirects[path] = (status, location)

    def serve_each(self, path: str, make_body: Callable[[int], bytes]) -> str:
        """A feed whose every answer is new (its author changes it at will): `make_body(n)` for request n
        (from 0), no caching headers, no gzip."""
        with self._lock:
            self._each[path] = make_body
        return self.url(path)

    def trickle(self, path: str, seconds_per_byte: float) -> str:
        """A host that answers one header byte every `seconds_per_byte`, never finishing (until stop())."""
        with self._lock:
            self._trickles[path] = seconds_per_byte
        return self.url(path)

    def trickle_pace(self, path: str) -> float | None:
        """Seconds between bytes if `path` trickles (the request is recorded), else None."""
        with self._lock:
            pace = self._trickles.get(path)
            if pace is not None:
                self.requests.append({"path": path, "headers": {}})
            return pace

    def requests_for(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def respond(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append({"path": path, "headers": headers})
            failures = self._failures.get(path)
            if failures:
                status, extra = failures.pop(0)
                return status, extra, b"<html>error</html>"
            if path in self._redirects:
                status, location = self._redirects[path]
                return status, {"Location": location}, b""
            make_body = self._each.get(path)
            number = len([r for r in self.requests if r["path"] == path]) - 1  # this one is recorded
        if make_body is not None:
            return 200, {"Content-Type": "application/rss+xml; charset=utf-8"}, make_body(number)
        with self._lock:
            resource = self._resources.get(path)
        if resource is None:
            return 404, {}, b"not found"
        out_headers = {
            "Last-Modified": resource.last_modified,
            "Content-Type": resource.content_type,
            **resource.headers,
        }
        if self.send_etags:
            out_headers["ETag"] = resource.etag
        if self.honour_conditional and (
            (self.send_etags and headers.get("if-none-match") == resource.etag)
            or (not self.send_etags and headers.get("if-modified-since") == resource.last_modified)
        ):
            return 304, {k: v for k, v in out_headers.items() if k != "Content-Type"}, b""
        body = resource.body
        if "gzip" in headers.get("accept-encoding", ""):
            body = gzip.compress(body)
            out_headers["Content-Encoding"] = "gzip"
        return 200, out_headers, body


class _Handler(BaseHTTPRequestHandler):
    host: FeedHost

    def do_GET(self) -> None:
        pace = self.host.trickle_pace(self.path)
        if pace is not None:
            self._trickle(pace)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, body = self.host.respond(self.path, headers)
        self.send_response(status)
        for name, value in out_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _trickle(self, pace: float) -> None:
        self.close_connection = True
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            while not self.host.stopping.wait(pace):  # the attacker's pace, until the host stops
                self.wfile.write(b"X")
                self.wfile.flush()
        except OSError:
            pass  # the client gave up: what a deadline is for

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def running_feed_host() -> Iterator[FeedHost]:
    host = FeedHost().start()
    try:
        yield host
    finally:
        host.stop()
