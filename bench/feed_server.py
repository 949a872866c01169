"""A feed host for the benchmarks, run in a process of its own so that its CPU time is not counted as
the bot's. Serves the sample SCMP feed on loopback:

- /etag/<n>: with an ETag, answering 304 to a matching If-None-Match (a well-behaved server);
- /same/<n>: the same bytes with 200 every time, conditional headers ignored (a common lazy server);
- /changing/<n>: a feed in which `NEW_PER_POLL` items are new at every request (a feed that publishes);
- /distant/<n>: as /etag/, each answer DISTANT_LATENCY late, as from a host across an ocean.

`python -m bench.feed_server` prints the port it listens on, then serves until killed.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "bot" / "sample" / "scmp-semiconductors.xml"
BODY = SAMPLE.read_bytes()
ETAG = '"scmp-sample-1"'
NEW_PER_POLL = 3
DISTANT_LATENCY = 0.05  # seconds
_GUID = re.compile(rb"(<guid[^>]*>)([^<]*)(</guid>)")


def changed_body(version: int) -> bytes:
    """The sample feed with its first NEW_PER_POLL items given guids never served before."""
    count = 0

    def renamed(match: re.Match[bytes]) -> bytes:
        nonlocal count
        count += 1
        if count > NEW_PER_POLL:
            return match.group(0)
        return match.group(1) + match.group(2) + b"&amp;v=" + str(version).encode() + match.group(3)

    return _GUID.sub(renamed, BODY)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real feed hosts do
    versions: dict[str, int] = {}  # noqa: RUF012 (one table for the whole server)
    lock = threading.Lock()

    def do_GET(self) -> None:
        kind = self.path.split("/")[1]
        if kind == "distant":
            time.sleep(DISTANT_LATENCY)  # the network's delay, not the bot's: the bot waits, it does no work
            kind = "etag"
        if kind == "etag" and self.headers.get("If-None-Match") == ETAG:
            self.send_response(304)
            self.send_header("ETag", ETAG)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if kind == "changing":
            with self.lock:
                version = self.versions[self.path] = self.versions.get(self.path, 0) + 1
            body = changed_body(version)
        elif kind in ("etag", "same"):
            body = BODY
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if kind == "etag":
            self.send_header("ETag", ETAG)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.request_queue_size = 1024  # 500 feeds may connect at once
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
