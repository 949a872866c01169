"""A pretend internet for the guarded fetcher, on loopback: a resolver that answers as a test says (and
may change its answer, as a rebinding DNS server does), and a network that routes a few public addresses
to loopback servers. The address checks under test are the production ones; only the last step, the TCP
connect, is routed here."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from ipaddress import ip_address

import httpcore


class FakeResolver:
    """Answers each name with the next of its answer lists (the last one repeats); records every lookup."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]] | None = None) -> None:
        self._answers = {name: list(lists) for name, lists in (answers or {}).items()}
        self.lookups: list[str] = []
        self._lock = threading.Lock()

    def answer(self, name: str, *addresses: str) -> None:
        """From now on `name` resolves to these addresses."""
        with self._lock:
            self._answers[name] = [list(addresses)]

    def then(self, name: str, *addresses: str) -> None:
        """After its current answer has been given once, `name` resolves to these addresses."""
        with self._lock:
            self._answers.setdefault(name, []).append(list(addresses))

    def __call__(self, name: str) -> list[str]:
        with self._lock:
            self.lookups.append(name)
            lists = self._answers.get(name)
            if not lists:
                return []
            return list(lists.pop(0) if len(lists) > 1 else lists[0])


class FakeInternet(httpcore.SyncBackend):
    """Connects a routed public address to its loopback server, and a loopback address to itself (so a
    request the guard let through to a private address would really arrive). Anything else fails, so a test
    never reaches the real network. Records every address it was asked to connect to."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, int]] = {}
        self.connections: list[str] = []

    def route(self, public: str, server_url: str) -> None:
        """Connections to `public` (any port) reach the server at `server_url` (http://127.0.0.1:port...)."""
        host_port = server_url.split("//", 1)[1].split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        self.routes[public] = (host, int(port))

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        address = ip_address(host)  # the guard connects to addresses, never to names: a name fails here
        self.connections.append(str(address))
        if str(address) in self.routes:
            host, port = self.routes[str(address)]
        elif not address.is_loopback:
            raise httpcore.ConnectError(f"no route to {address} in the test network")
        return super().connect_tcp(host, port, timeout, local_address, socket_options)
