"""The one place that configures logging: one line per event, `event key=value`, on stderr; or, with
BOT_LOG_FORMAT=json, one JSON object per line with those key=value pairs as fields, for log platforms
that index JSON. Either way Slack tokens are masked, whatever logged them (a library's error message
can quote a request)."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")

# xoxb- bot, xoxp- user, xoxa-/xoxr-/xoxe- app and refresh tokens, xapp- app-level tokens.
_TOKEN = re.compile(r"\b(xox[abeprs]|xapp)-[A-Za-z0-9-]+")
# `key=value` pairs of a message; a value is one word, or quoted as repr() quotes it.
_FIELD = re.compile(r"""(?<!\S)([a-z_]+)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)""")


def mask_tokens(text: str) -> str:
    return _TOKEN.sub(lambda m: f"{m.group(1)}-…(masked)", text)


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_tokens(super().format(record))


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "event", "message", ...fields}: `event` is the message's first word
    (poll, slack, listening...) and each `key=value` of the message is a field of its own."""

    def format(self, record: logging.LogRecord) -> str:
        message = mask_tokens(record.getMessage())
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": message.split(" ", 1)[0] if message else "",
            "message": message,
        }
        for key, value in _FIELD.findall(message):
            if key not in line:
                line[key] = _unquote(value)
        if record.exc_info:
            line["exception"] = mask_tokens(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            _MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that log every request, or log failures we already report in our own words.
    for name in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("slack_sdk").setLevel(logging.CRITICAL)
