"""Command line: parses arguments, calls the app, and turns errors into one line and an exit code.

Exit codes: 0 done; 1 configuration or start-up error; 2 usage; 3 `run --once` finished but a feed failed
or alerts are still pending (so cron notices).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from bot import __version__
from bot.app import build_app, run_scheduler
from bot.config import Environment, environment_from, load_environment, load_rules
from bot.errors import BotError, ConfigError, DeliveryError
from bot.fetch import HttpFetcher
from bot.logs import configure_logging
from bot.preview import preview_feeds, render_preview
from bot.slack import MentionResolver, SlackClient, check_mentions

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="feedwatch: posts news feed items that match channel keyword rules to Slack.",
        epilog="Environment: SLACK_BOT_TOKEN (absent: console mode), SLACK_API_URL, BOT_RULES, BOT_DB, "
        "BOT_LOG_LEVEL, BOT_LOG_FORMAT (text or json).",
    )
    parser.add_argument("--version", action="version", version=f"feedwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="poll every feed at its interval and deliver alerts")
    run.add_argument(
        "--once", action="store_true", help="poll every feed once, deliver, retry pending alerts, exit"
    )
    commands.add_parser("check", help="validate the rules file; exit 1 listing every problem")
    preview = commands.add_parser(
        "preview", help="show which channels would get which items; changes no state"
    )
    preview.add_argument(
        "--feed", metavar="URL_OR_PATH", help="preview this feed against every rule, ignoring seen state"
    )
    return parser


def main(
    argv: Sequence[str] | None = None, environ: dict[str, str] | None = None, stdout: IO[str] | None = None
) -> int:
    args = _parser().parse_args(argv)
    out = stdout or sys.stdout
    try:
        env = load_environment() if environ is None else environment_from(environ, Path.cwd())
        configure_logging(env.log_level, env.log_format)
        if args.command == "check":
            return _check(env, out)
        if args.command == "preview":
            return _preview(env, args.feed, out)
        return _run(env, once=args.once, out=out)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 1
    except BotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _check(env: Environment, out: IO[str]) -> int:
    rules = load_rules(env.rules_path)
    if env.slack_token:
        # On-call mentions name user groups only Slack knows: ask it, when it can be reached.
        client = SlackClient(env.slack_token, env.slack_api_url)
        try:
            problems = check_mentions(rules, MentionResolver(client))
        except DeliveryError as e:
            if not e.transient:
                raise BotError(
                    f"cannot check on-call mentions: Slack said {e.error} "
                    "(the app needs the usergroups:read scope: see manifest.yml, then reinstall)"
                ) from e
            log.warning("cannot check on-call mentions with Slack now (%s)", e.error)
        else:
            if problems:
                raise ConfigError(problems)
    channels = len({rule.channel for rule in rules.channels})
    print(
        f"{env.rules_path}: OK ({len(rules.feeds)} feed(s), {len(rules.channels)} channel rule(s) for "
        f"{channels} channel(s))",
        file=out,
    )
    return 0


def _preview(env: Environment, feed_url: str | None, out: IO[str]) -> int:
    rules = load_rules(env.rules_path)
    fetcher = HttpFetcher()
    try:
        previews = preview_feeds(rules, fetcher, db_path=env.db_path, adhoc_url=feed_url)
    finally:
        fetcher.close()
    out.write(render_preview(previews))
    return 1 if any(preview.error for preview in previews) else 0


def _run(env: Environment, *, once: bool, out: IO[str]) -> int:
    app = build_app(env, stdout=out, listening=not once)
    if not once:
        from bot.slackapp import serve  # slack-bolt and waitress load only for the long-running bot

        run_scheduler(app, serve=lambda deliver_held_now: serve(app, env, on_resume=deliver_held_now))
        return 0
    try:
        reports = app.poll_all_once()
        _, still_pending = app.retry_pending()
        app.tick()  # grouped messages and escalations that are due: from cron there is no ticker job
        app.prune_archive()  # from cron there is no hourly job to do it
    finally:
        app.close()
    posted = sum(r.posted for r in reports)
    failed = [r.feed_id for r in reports if r.status == "error"]
    where = "printed" if app.console else "posted"
    log.info(
        "run once feeds=%d alerts_%s=%d failed_feeds=%d pending=%d",
        len(reports),
        where,
        posted,
        len(failed),
        still_pending,
    )
    if app.console and posted == 0 and not failed and not still_pending:
        print("No new alerts: every matching item was already shown (state is in BOT_DB).", file=out)
    return 3 if failed or still_pending else 0
