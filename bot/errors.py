"""The bot's one exception hierarchy. Adapters translate library exceptions into these
(`raise ... from e`)."""

from __future__ import annotations


class BotError(Exception):
    """Base of every error the bot expects and reports as one line."""


class ConfigError(BotError):
    """A rules file or the environment is invalid. `problems` holds one line per problem, each naming
    the file, line and field ("rules.yaml:14: channels[1].keywords: must not be empty")."""

    def __init__(self, problems: list[str] | tuple[str, ...]):
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


class FeedError(BotError):
    """A feed could not be fetched or parsed; the other feeds carry on."""

    def __init__(self, feed_id: str, reason: str):
        self.feed_id = feed_id
        self.reason = reason
        super().__init__(f"feed {feed_id}: {reason}")


# Slack's answers when the bot token itself is refused: no channel will fare better until a person acts.
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"})

# Slack's answers when one channel cannot take posts until a person acts: deleted, archived, or private
# without the bot in it.
CHANNEL_ERRORS = frozenset({"channel_not_found", "is_archived", "not_in_channel"})


class DeliveryError(BotError):
    """Slack did not accept a message. `transient` errors are retried later; the others need a person.
    `affects_all` says no other channel will fare better (an outage, a refused token); `uncertain` says
    Slack may have carried out the request anyway."""

    def __init__(
        self,
        channel: str,
        error: str,
        *,
        transient: bool,
        retry_after: float | None = None,
        affects_all: bool | None = None,
        uncertain: bool = False,
    ):
        self.channel = channel
        self.error = error
        self.transient = transient
        self.retry_after = retry_after
        self.affects_all = transient if affects_all is None else affects_all
        # The request may have been carried out (a read timeout, a 5xx after Slack took the message):
        # before posting again, look for the message in the channel.
        self.uncertain = uncertain
        super().__init__(f"channel {channel}: {error}")

    @property
    def token_refused(self) -> bool:
        return self.error in AUTH_ERRORS

    @property
    def channel_broken(self) -> bool:
        return self.error in CHANNEL_ERRORS


class FetchError(BotError):
    """Getting a feed's bytes failed: timeout, HTTP error, too large, too many redirects."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        kind: str | None = None,
    ):
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        # For metrics and for what is shown outside the logs (shown_failure): timeout, too_large,
        # redirects, decode, bad_url, refused_address, dns, file, network, or http_<status>.
        self.kind = kind or (f"http_{status}" if status is not None else "network")
        super().__init__(reason)


# What a failed poll or add-feed is called wherever people other than the operator read it (/healthz, App
# Home, Slack notices and replies): its kind, never its detail. "Connection refused" against "looks like HTML"
# told whoever could point the bot at an address which ports answer there (a port scan); a resolver's answer
# named internal addresses. The logs keep the detail.
_SHOWN_KINDS = {
    "timeout": "timed out",
    "too_large": "too large (over the size cap)",
    "redirects": "too many redirects",
    "decode": "could not be decoded",
    "bad_url": "refused URL",
    "refused_address": "refused: not a public address",
    "dns": "host name not found",
    "network": "network error",
    "file": "file not readable",
    "parse": "not a feed",
    "crash": "internal error",
}


def shown_failure(kind: str | None) -> str:
    """The one-line kind of a failure (see FetchError.kind; "parse", "crash"), for anywhere but the logs."""
    status = (kind or "").removeprefix("http_")
    if status != kind and status.isdigit():
        return f"HTTP {status}"
    return _SHOWN_KINDS.get(kind or "", "failed")


class StateError(BotError):
    """The state files cannot be read or written."""


class DamagedStateError(StateError):
    """A state file is there but is not what the bot wrote: it is moved aside and the bot starts afresh."""


class StateLockedError(StateError):
    """Another process holds the state files."""


# Exceptions that ask the process to stop: never swallowed at a job or item boundary. Everything else
# that derives from BaseException is caught there (pyo3's PanicException, raised by the Rust matchers,
# is a BaseException and not an Exception).
STOP_REQUESTS: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit)


def one_line_error(error: BaseException) -> str:
    text = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
