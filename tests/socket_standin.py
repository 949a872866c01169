"""A Slack Socket Mode stand-in on loopback: the WebSocket end that apps.connections.open points at.

On each connection it greets with a `hello`, as Slack does; the test then pushes envelopes (slash commands,
interactions, events) and reads back the app's acknowledgements, `{"envelope_id": ..., "payload": ...}`.
Point the Web API stand-in at it with `slack.state.socket_url = socket_mode.url`.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

WAIT_SECONDS = 10.0
KEEPALIVE_SECONDS = 0.2


class SocketModeStandIn:
    def __init__(self) -> None:
        self.connections = 0
        self.connected = threading.Event()
        self._current: ServerConnection | None = None
        self._lock = threading.Lock()
        self._received: queue.Queue[dict[str, Any]] = queue.Queue()
        # Frequent pings, as keepalive: slack_sdk's client closes its socket only between two reads, and a
        # read otherwise waits out its 3 s timeout, so without traffic every close() takes 3 s. No ping
        # timeout: a busy machine answering late must not cost the test its connection.
        self._server = serve(
            self._handle,
            "127.0.0.1",
            0,
            compression=None,
            ping_interval=KEEPALIVE_SECONDS,
            ping_timeout=None,
            close_timeout=1,  # a client gone without a close frame must not hold up shutdown
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="socket-mode", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"ws://{host}:{port}/"

    def start(self) -> SocketModeStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=WAIT_SECONDS)

    def _handle(self, connection: ServerConnection) -> None:
        hello = {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {"host": "standin", "approximate_connection_time": 18060},
            "connection_info": {"app_id": "A0STANDIN"},
        }
        connection.send(json.dumps(hello))
        with self._lock:
            self._current = connection
            self.connections += 1
        self.connected.set()
        try:
            for message in connection:
                self._received.put(json.loads(message))
        except ConnectionClosed:
            pass  # the client drops the TCP connection without a close frame when it shuts down

    # -- test controls -----------------------------------------------------------------------------

    def send(self, envelope: dict[str, Any], *, timeout: float = WAIT_SECONDS) -> None:
        """Sends an envelope on the newest connection, once a client has connected."""
        if not self.connected.wait(timeout):
            raise TimeoutError(f"no Socket Mode client connected within {timeout} s")
        with self._lock:
            connection = self._current
        assert connection is not None
        connection.send(json.dumps(envelope))

    def acknowledgement(self, envelope_id: str, *, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        """The client's answer to `envelope_id`; whatever else it sent meanwhile is dropped."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self._received.get(timeout=left)
            except queue.Empty:
                break
            if message.get("envelope_id") == envelope_id:
                return message
        raise TimeoutError(f"no acknowledgement for envelope {envelope_id!r} within {timeout} s")

    def request(self, envelope: dict[str, Any], *, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        """Sends an envelope and returns the client's acknowledgement of it."""
        self.send(envelope, timeout=timeout)
        return self.acknowledgement(str(envelope["envelope_id"]), timeout=timeout)


@contextmanager
def running_socket_mode() -> Iterator[SocketModeStandIn]:
    standin = SocketModeStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()
