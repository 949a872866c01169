"""A feed host on loopback serving real feed files, with ETag and Last-Modified support and gzip."""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Iterator
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
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, body = self.host.respond(self.path, headers)
        self.send_response(status)
        for name, value in out_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def running_feed_host() -> Iterator[FeedHost]:
    host = FeedHost().start()
    try:
        yield host
    finally:
        host.stop()
