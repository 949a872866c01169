"""The bot's HTTP listeners (waitress): the public one on PORT (POST /slack/events, and /healthz saying only
ok or failing) and the detail one on METRICS_PORT, loopback by default (the full /healthz and /metrics).
It bounds what any client can make the process hold; it must not decide anything about Slack or feeds.

Why waitress: it reads each request, headers and body, in one event loop and hands a thread only a request
that has fully arrived, refusing an oversized body from its Content-Length before reading it. A thread-per-
connection server (cheroot) lets a dozen connections trickling a byte every few seconds hold every thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

from bot.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger(__name__)

# Slack's own payloads (a slash command, a button press, an event) are a few kilobytes.
MAX_REQUEST_BODY_BYTES = 1024 * 1024
MAX_REQUEST_HEADER_BYTES = 32 * 1024
# From a connection's first byte of a request (or its opening) to the request's last byte.
REQUEST_DEADLINE_SECONDS = 10.0
MAX_CONNECTIONS = 1000  # open at once; beyond it new connections wait in the listen backlog
REQUEST_THREADS = 8  # for requests that have fully arrived: the Slack ack is quick, the rest is deferred
_LOOP_SECONDS = 0.2  # how often the event loop looks for connections past their deadline

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _json(start_response: Callable[..., Any], code: str, payload: object) -> list[bytes]:
    body = json.dumps(payload, default=str).encode()
    start_response(code, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _not_found(start_response: Callable[..., Any]) -> list[bytes]:
    return _json(start_response, "404 Not Found", {"error": "not found"})


def _health_code(status: dict[str, object]) -> str:
    return "200 OK" if status.get("status") == "ok" else "503 Service Unavailable"


def public_routes(status: Callable[[], dict[str, object]], slack: WsgiApp | None = None) -> WsgiApp:
    """PORT, reachable by anyone: /healthz says ok or failing and nothing else (no error text, paths or
    channel IDs); /slack/events goes to Bolt, which checks the signature."""

    def routes(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == "/healthz" and method in ("GET", "HEAD"):
            summary = "ok" if status().get("status") == "ok" else "failing"
            return _json(start_response, _health_code({"status": summary}), {"status": summary})
        if path == "/slack/events" and slack is not None:
            return slack(environ, start_response)
        return _not_found(start_response)

    return routes


def detail_routes(status: Callable[[], dict[str, object]], metrics: Callable[[], bytes] | None) -> WsgiApp:
    """METRICS_PORT, for the operator: each feed's status and error (/healthz) and /metrics."""

    def routes(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == "/healthz" and method in ("GET", "HEAD"):
            detail = status()
            return _json(start_response, _health_code(detail), detail)
        if path == "/metrics" and method in ("GET", "HEAD") and metrics is not None:
            body = metrics()
            start_response(
                "200 OK", [("Content-Type", METRICS_CONTENT_TYPE), ("Content-Length", str(len(body)))]
            )
            return [body]
        return _not_found(start_response)

    return routes


class _DeadlineChannel(HTTPChannel):  # type: ignore[misc]
    """A connection that remembers since when it owes the server a whole request."""

    def __init__(self, server: _Server, sock: Any, addr: Any, adj: Adjustments, map: Any = None) -> None:
        self.waiting_since = server.clock()
        super().__init__(server, sock, addr, adj, map)

    def received(self, data: bytes) -> bool:
        if self.request is None:  # the first bytes of a new request: its deadline starts now
            self.waiting_since = self.server.clock()
        return bool(super().received(data))

    def service(self) -> None:
        super().service()
        self.waiting_since = self.server.clock()  # answered: a keep-alive connection starts afresh


class _Server(TcpWSGIServer):  # type: ignore[misc]
    channel_class = _DeadlineChannel

    def __init__(
        self, application: WsgiApp, *, adj: Adjustments, clock: Callable[[], float], deadline: float
    ) -> None:
        self.clock, self.deadline = clock, deadline
        super().__init__(application, map={}, adj=adj)

    def close_late_connections(self) -> int:
        """Closes every connection that has not delivered a whole request within the deadline; one whose
        request is being answered is left alone."""
        cutoff = self.clock() - self.deadline
        late = [
            channel
            for channel in list(self.active_channels.values())
            if not channel.requests and channel.waiting_since < cutoff and not channel.will_close
        ]
        for channel in late:
            channel.will_close = True  # the loop closes it at its next turn
        return len(late)


class HttpServer:
    """One waitress listener: a thread runs its event loop, REQUEST_THREADS answer requests that have fully
    arrived. Bodies over MAX_REQUEST_BODY_BYTES get 413 (from Content-Length, before a byte of the body is
    read; a chunked body when it crosses the limit), headers over MAX_REQUEST_HEADER_BYTES 431, and a
    connection that has not sent a whole request within REQUEST_DEADLINE_SECONDS is closed."""

    def __init__(
        self,
        routes: WsgiApp,
        *,
        port: int,
        host: str = "0.0.0.0",
        name: str = "http",
        clock: Callable[[], float] = time.monotonic,
        deadline: float = REQUEST_DEADLINE_SECONDS,
        max_body: int = MAX_REQUEST_BODY_BYTES,
    ) -> None:
        adj = Adjustments(
            host=host,
            port=port,
            threads=REQUEST_THREADS,
            max_request_body_size=max_body,
            max_request_header_size=MAX_REQUEST_HEADER_BYTES,
            connection_limit=MAX_CONNECTIONS,
            channel_timeout=int(deadline) + 1,  # waitress's own idle rule; ours is stricter
            asyncore_use_poll=True,  # select() cannot watch descriptors past 1024
            ident="feedwatch",
            expose_tracebacks=False,
        )
        self.name = name
        self._server = _Server(routes, adj=adj, clock=clock, deadline=deadline)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # The loop thread closes the server and its trigger (a pipe) once it sees _stopping; stop() pulls
        # that trigger. Both under this lock, so that stop() never writes to a closed descriptor (EBADF),
        # or to whatever file has taken its number since.
        self._closing = threading.Lock()
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    @property
    def host(self) -> str:
        return str(self._server.effective_host)

    def _run(self) -> None:
        server = self._server
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=_LOOP_SECONDS, map=server._map, use_poll=True, count=1)
                server.close_late_connections()
        finally:
            with self._closing:
                self._closed = True
                for channel in list(server._map.values()):
                    if channel is not server and channel is not server.trigger:
                        channel.close()
                server.close()
            server.task_dispatcher.shutdown(timeout=5)

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._closing:
            self._stopping.set()
            if not self._closed:
                self._server.pull_trigger()  # wakes the loop now rather than at its next timeout
        if self._thread is not None:
            self._thread.join(timeout=10)
