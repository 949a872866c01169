"""The real bot process (`python -m bot run`) under attack, and a watch of what its users see meanwhile: how
long a signed `/feeds help` and `GET /healthz` take, how late a good feed's alert reaches Slack, and the
process's peak RSS. Helpers for tests/test_under_attack.py; no product code, no mocks: every attack comes
the way an attacker's would, over loopback HTTP (the bot's port, a feed host, signed slash commands).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx

from tests.conftest import REPO
from tests.slack_standin import SlackStandIn

# The "Done when", exactly: nothing here is loosened for today's code.
INTERVAL_SECONDS = 2  # every feed's poll interval in these runs
HELP_BOUND = 1.0  # a signed `/feeds help` is answered within this many seconds
HEALTHZ_BOUND = 1.0  # GET /healthz is answered within this many seconds
ALERT_BOUND = INTERVAL_SECONDS + 5.0  # a good feed's new item is posted within one interval plus 5 s
RSS_BOUND_MIB = 300  # the process's peak resident memory

PROBE_TIMEOUT = 2.0  # a probe still unanswered by then has failed its bound anyway: stop waiting for it
PROBE_PACE = 0.1  # between two probes of one kind, so the watch itself is no flood
WATCH_AT_LEAST = 2.0  # seconds of probing after the good item is published, even if its alert is quicker
START_TIMEOUT = 60.0  # the process answering /healthz and polling both feeds (imports are slow under load)

SECRET = "5ee0b1d7c0ffee00a77ac4e85a1e9a42"
GOOD, ATTACKED = "C0GOOD001", "C0ATTACK1"  # the good feed's channel; the channel the attack is aimed at
WATCHER, ATTACKER = "U0WATCH01", "U0EVIL001"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    timestamp = str(int(time.time()))
    base = f"v0:{timestamp}:".encode() + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}


def command_body(text: str, *, channel: str, user: str, response_url: str) -> bytes:
    return urlencode(
        {
            "command": "/feeds",
            "text": text,
            "channel_id": channel,
            "channel_name": "directmessage" if channel.startswith("D") else "attacked",
            "user_id": user,
            "team_id": "T0TEAM001",
            "response_url": response_url,
            "trigger_id": "1.2.3",
        }
    ).encode()


@dataclass
class BotProcess:
    """`python -m bot run` in its own folder, serving Slack over HTTP on `port`."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    slack: SlackStandIn

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(
        self, client: httpx.Client, text: str, *, channel: str = GOOD, user: str = WATCHER
    ) -> httpx.Response:
        body = command_body(text, channel=channel, user=user, response_url=self.slack.response_url())
        return client.post(
            self.url + "/slack/events",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **sign(body)},
        )

    def peak_rss_mib(self) -> float | None:
        """VmHWM: the most resident memory the process has had since it started (None once it is gone)."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        # The watch's own `help` commands would crowd out what the bot said about the attack.
        said = [line[:300] for line in text.splitlines() if "text='help'" not in line]
        return "\n".join(said[-lines:])

    def stop(self) -> None:
        # SIGKILL: how the bot shuts down is not under test here, and one frozen by an attack would not
        # get to its signal handler in time anyway.
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def start_bot(folder: Path, slack: SlackStandIn, rules: str) -> BotProcess:
    (folder / "rules.yaml").write_text(rules)
    port = free_port()
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PORT": str(port),
        "METRICS_PORT": "0",  # parallel bots would contend for the default detail port
        "SLACK_BOT_TOKEN": slack.state.token,
        "SLACK_API_URL": slack.url,
        "SLACK_SIGNING_SECRET": SECRET,
        "BOT_RULES": str(folder / "rules.yaml"),
        "BOT_DB": str(folder / "state.json"),
        "BOT_LOG_LEVEL": "INFO",
    }
    log = folder / "bot.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "run"], env=environ, cwd=REPO, stdout=out, stderr=out
        )
    return BotProcess(process, port, log, slack)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, bot: BotProcess) -> None:
    """Bounded wait for something the bot does on its own threads (no fixed sleep)."""
    pause = threading.Event()  # never set: waiting on it paces the loop
    deadline = time.monotonic() + timeout
    while not condition():
        if bot.process.poll() is not None:
            raise AssertionError(
                f"the bot exited ({bot.process.returncode}) before {what}:\n{bot.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}:\n{bot.log_tail()}")
        pause.wait(0.02)


def answers_healthz(bot: BotProcess) -> bool:
    try:
        return httpx.get(bot.url + "/healthz", timeout=1, trust_env=False).status_code in (200, 503)
    except httpx.HTTPError:
        return False


# -- the watch ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    what: str  # "help" or "healthz"
    seconds: float  # from sending to the whole answer (PROBE_TIMEOUT when there was none)
    problem: str | None  # why it did not count as answered, if so


@dataclass
class Watch:
    """What a user sees while an attack runs: probes of `/feeds help` and `/healthz`, each kind on its own
    thread, back to back, until `stop`."""

    bot: BotProcess
    probes: list[Probe] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Watch:
        for what, probe in (("help", self._help), ("healthz", self._healthz)):
            thread = threading.Thread(
                target=self._loop, args=(what, probe), name=f"watch-{what}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=PROBE_TIMEOUT + 5)

    def _loop(self, what: str, probe: Callable[[httpx.Client], str | None]) -> None:
        with httpx.Client(timeout=PROBE_TIMEOUT, trust_env=False) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    problem = probe(client)
                except httpx.HTTPError as e:
                    problem = f"{type(e).__name__}: {e}"[:120]
                with self._lock:
                    self.probes.append(Probe(what, time.monotonic() - started, problem))
                self._stop.wait(PROBE_PACE)

    def _help(self, client: httpx.Client) -> str | None:
        response = self.bot.command(client, "help")
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        if not response.text.strip():
            return "an empty answer"
        return None

    def _healthz(self, client: httpx.Client) -> str | None:
        # 503 is an answer too (a failing feed may be reported): the bound is about answering in time.
        response = client.get(self.bot.url + "/healthz")
        return None if response.status_code in (200, 503) else f"HTTP {response.status_code}"

    def of(self, what: str) -> list[Probe]:
        with self._lock:
            return [p for p in self.probes if p.what == what]


def seconds_until_posted(bot: BotProcess, channel: str, title: str) -> float | None:
    """Seconds until a post naming `title` reaches `channel` (None if not within ALERT_BOUND); waits at
    least WATCH_AT_LEAST either way, so that the watch sees the attack at work."""
    pause = threading.Event()  # never set: waiting on it paces the loop
    published = time.monotonic()
    posted_after: float | None = None
    while bot.process.poll() is None:
        elapsed = time.monotonic() - published
        if posted_after is None and any(
            title in json.dumps(post, ensure_ascii=False) for post in bot.slack.posts_to(channel)
        ):
            posted_after = elapsed
        if elapsed >= ALERT_BOUND or (posted_after is not None and elapsed >= WATCH_AT_LEAST):
            break
        pause.wait(0.02)
    return posted_after


@dataclass(frozen=True)
class Outcome:
    """What users saw during one attack, held to the issue's bounds."""

    helps: list[Probe]
    healths: list[Probe]
    alert_after: float | None
    peak_rss_mib: float | None
    exit_code: int | None

    def problems(self) -> list[str]:
        problems = []
        if self.exit_code is not None:
            problems.append(f"the bot exited with {self.exit_code} during the attack")
        for what, probes, bound in (
            ("/feeds help", self.helps, HELP_BOUND),
            ("/healthz", self.healths, HEALTHZ_BOUND),
        ):
            if not probes:
                problems.append(f"{what}: never sent")
            elif late_or_failed(probes, bound):
                problems.append(describe(what, probes, bound))
        if self.alert_after is None or self.alert_after > ALERT_BOUND:
            problems.append(f"the good feed's alert was not posted within {ALERT_BOUND:g}s")
        if self.peak_rss_mib is None or self.peak_rss_mib >= RSS_BOUND_MIB:
            problems.append(f"peak RSS {self.peak_rss_mib or 0:.0f} MiB (bound {RSS_BOUND_MIB} MiB)")
        return problems

    def figures(self) -> str:
        def slowest(probes: list[Probe]) -> str:
            return f"slowest {max((p.seconds for p in probes), default=0):.2f}s of {len(probes)}"

        alert = "never" if self.alert_after is None else f"{self.alert_after:.1f}s"
        return (
            f"help {slowest(self.helps)}, healthz {slowest(self.healths)}, alert {alert}, "
            f"peak RSS {self.peak_rss_mib or 0:.0f} MiB"
        )


def late_or_failed(probes: list[Probe], bound: float) -> list[Probe]:
    return [p for p in probes if p.problem is not None or p.seconds > bound]


def describe(what: str, probes: list[Probe], bound: float) -> str:
    bad = late_or_failed(probes, bound)
    worst = max(probes, key=lambda p: p.seconds)
    example = next((p.problem for p in bad if p.problem), None)
    return (
        f"{what}: {len(bad)} of {len(probes)} not answered within {bound:g}s "
        f"(slowest {worst.seconds:.2f}s{'; ' + example if example else ''})"
    )


# -- attacks that come through the bot's own port ---------------------------------------------------------


@contextmanager
def huge_unsigned_bodies(bot: BotProcess, *, connections: int = 6, mib: int = 64) -> Iterator[None]:
    """`connections` parallel unsigned POST /slack/events, each declaring and streaming `mib` MiB (the
    issue's six times 512 MiB, scaled down). A refusal may close the connection early: that is fine."""
    chunk = b"x" * (1 << 20)
    head = (
        "POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {mib << 20}\r\nX-Slack-Request-Timestamp: {int(time.time())}\r\n"
        "X-Slack-Signature: v0=forged\r\n\r\n"
    ).encode()

    def send() -> None:
        try:
            with socket.create_connection(("127.0.0.1", bot.port), timeout=10) as attacker:
                attacker.sendall(head + b"payload=")
                for _ in range(mib):
                    attacker.sendall(chunk)
                attacker.recv(1024)
        except OSError:
            pass  # refused, reset or timed out: the server stopped reading, as it should

    senders = [threading.Thread(target=send, name=f"huge-{n}", daemon=True) for n in range(connections)]
    for sender in senders:
        sender.start()
    try:
        yield
    finally:
        deadline = time.monotonic() + 20  # all of it sent by then today; refused at once once fixed
        for sender in senders:
            sender.join(timeout=max(0.0, deadline - time.monotonic()))


@contextmanager
def slowloris(bot: BotProcess, *, connections: int = 12, seconds_per_byte: float = 1.0) -> Iterator[None]:
    """`connections` connections sending one header byte each `seconds_per_byte`, reopened when the server
    drops one (as such a tool does), until the block ends."""
    request = b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
    stop = threading.Event()
    sockets: list[socket.socket | None] = [None] * connections
    sent = [0] * connections

    def trickle() -> None:
        while not stop.is_set():
            for n in range(connections):
                try:
                    if sockets[n] is None:
                        sockets[n] = socket.create_connection(("127.0.0.1", bot.port), timeout=1)
                        sent[n] = 0
                    sock = sockets[n]
                    assert sock is not None
                    sock.sendall(request[sent[n] : sent[n] + 1])
                    sent[n] = (sent[n] + 1) % len(request)
                except OSError:
                    dropped = sockets[n]
                    if dropped is not None:
                        dropped.close()
                    sockets[n] = None
            stop.wait(seconds_per_byte)

    attacker = threading.Thread(target=trickle, name="slowloris", daemon=True)
    attacker.start()
    try:
        yield
    finally:
        stop.set()
        attacker.join(timeout=10)
        for sock in sockets:
            if sock is not None:
                sock.close()


@contextmanager
def commands_in_background(
    bot: BotProcess, texts: list[tuple[str, str, str]], *, one_after_another: bool = False
) -> Iterator[None]:
    """Signed commands (text, channel, user), all at once from their own threads, or `one_after_another`
    from one; their answers are not waited for beyond the block (a slow answer is what the watch measures
    for everyone else)."""

    def send(*commands: tuple[str, str, str]) -> None:
        with httpx.Client(timeout=15, trust_env=False) as client:
            for text, channel, user in commands:
                with suppress(httpx.HTTPError):  # a refusal or a timeout: the watch measures what matters
                    bot.command(client, text, channel=channel, user=user)

    batches = [tuple(texts)] if one_after_another else [(command,) for command in texts]
    senders = [threading.Thread(target=send, args=batch, daemon=True) for batch in batches]
    for sender in senders:
        sender.start()
    try:
        yield
    finally:
        deadline = time.monotonic() + 1
        for sender in senders:  # daemon threads: one the bot still holds ends with the test process
            sender.join(timeout=max(0.0, deadline - time.monotonic()))
