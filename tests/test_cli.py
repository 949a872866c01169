"""The command line as a user meets it: exit codes, one-line errors, console mode, preview."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.storage import open_store
from tests.conftest import REPO, SAMPLE_FEED, scmp_feed

DEMO_RULES = REPO / "bot" / "sample" / "demo-rules.yaml"


def run_cli(args: list[str], environ: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(args, environ=environ, stdout=out)
    return code, out.getvalue()


def test_quick_start_runs_the_sample_feed_in_console_mode(tmp_path: Path) -> None:
    """The README's first command, as a subprocess: the real entry point, no Slack token."""
    environ = {"PATH": "/usr/bin:/bin", "BOT_RULES": str(DEMO_RULES), "BOT_DB": str(tmp_path / "state.json")}
    first = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--once"], env=environ, cwd=REPO, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    assert "▶ #chip-supply-chain  ·  matched: Nexperia, Wingtech" in first.stdout
    assert "console mode" in first.stderr and "Traceback" not in first.stderr

    again = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--once"], env=environ, cwd=REPO, capture_output=True, text=True
    )
    assert again.returncode == 0 and "▶" not in again.stdout and "No new alerts" in again.stdout


def test_check_accepts_the_shipped_rules_files() -> None:
    for rules in (REPO / "rules.yaml", DEMO_RULES):
        code, out = run_cli(["check"], {"BOT_RULES": str(rules)})
        assert code == 0 and "OK" in out


def test_check_lists_every_problem_on_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "feeds:\n  - id: a\n    url: https://e.com/a\n  - id: a\n    url: https://e.com/b\n"
        "channels:\n  - channel: C1\n    keywords: []\n"
        "  - channel: C2\n    feeds: [nope]\n    keywords: [x]\n"
        "    colour: red\n"
    )
    code = main(["check"], environ={"BOT_RULES": str(rules)})
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 4, err
    assert all(line.startswith(f"{rules}:") for line in err)
    assert any(":4: feeds[1].id: duplicate feed id 'a'" in line for line in err)
    assert any(":8: channels[0].keywords: must not be empty" in line for line in err)


def test_a_missing_rules_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--once"], environ={"BOT_RULES": str(tmp_path / "nope.yaml")})
    err = capsys.readouterr().err
    assert code == 1 and "nope.yaml" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_second_bot_on_the_same_state_file_stops_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {"BOT_RULES": str(DEMO_RULES), "BOT_DB": str(tmp_path / "state.json")}
    running = open_store(tmp_path / "state.json")  # the first bot
    code = main(["run", "--once"], environ=environ, stdout=io.StringIO())
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "state.json is in use by another feedwatch process" in err and "BOT_DB" in err
    running.close()
    assert main(["run", "--once"], environ=environ, stdout=io.StringIO()) == 0


def test_a_damaged_state_file_is_moved_aside_and_the_run_starts_afresh(tmp_path: Path) -> None:
    environ = {"BOT_RULES": str(DEMO_RULES), "BOT_DB": str(tmp_path / "state.json")}
    _, first = run_cli(["run", "--once"], environ)
    (tmp_path / "state.json").write_text('{"feeds": {"1": {"feed_id"')  # a disk that filled up mid-write
    (tmp_path / "state.journal.jsonl").unlink(missing_ok=True)
    code, again = run_cli(["run", "--once"], environ)
    assert code == 0
    assert again.count("▶") == first.count("▶")  # a first poll again: its backfill, never the whole feed
    assert list(tmp_path.glob("state.json.damaged-*"))


def test_preview_changes_no_state(tmp_path: Path) -> None:
    db = tmp_path / "state.json"
    code, out = run_cli(["preview"], {"BOT_RULES": str(DEMO_RULES), "BOT_DB": str(db)})
    assert code == 0
    assert "first poll: backfill" in out
    assert "post → #chip-supply-chain  matched Nexperia, Wingtech" in out
    assert "first poll: only the newest 3 per channel are posted" in out
    assert not db.exists()


def test_preview_after_a_run_shows_items_as_seen(tmp_path: Path) -> None:
    environ = {"BOT_RULES": str(DEMO_RULES), "BOT_DB": str(tmp_path / "state.json")}
    run_cli(["run", "--once"], environ)
    before = {path.name: path.read_bytes() for path in tmp_path.glob("state*")}
    code, out = run_cli(["preview"], environ)
    assert code == 0 and "0 alert(s) would be posted" in out and "already seen in an earlier poll" in out
    assert {path.name: path.read_bytes() for path in tmp_path.glob("state*")} == before


def test_preview_feed_ignores_seen_state_and_feed_filters_and_marks_exclusions(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"feeds:\n  - id: other\n    url: {tmp_path / 'other.xml'}\n"
        "channels:\n  - channel: C1\n    feeds: [other]\n    keywords: [Huawei]\n    exclude: [hubris]\n"
    )
    feed = tmp_path / "feed.xml"
    feed.write_bytes(scmp_feed())
    code, out = run_cli(
        ["preview", "--feed", str(feed)], {"BOT_RULES": str(rules), "BOT_DB": str(tmp_path / "s.json")}
    )
    assert code == 0
    assert "every rule, seen state ignored" in out
    assert "post → C1  matched Huawei" in out
    assert f"held   C1  excluded by hubris ({rules}:5)" in out


def test_run_once_exits_3_when_a_feed_fails(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"feeds:\n  - id: gone\n    url: {tmp_path / 'missing.xml'}\n  - id: ok\n    url: {SAMPLE_FEED}\n"
        "channels:\n  - channel: C1\n    keywords: [Nexperia]\n"
    )
    code, out = run_cli(["run", "--once"], {"BOT_RULES": str(rules), "BOT_DB": str(tmp_path / "s.json")})
    assert code == 3
    assert "Nexperia" in out  # the healthy feed was still polled and its alert shown


def test_run_once_posts_to_the_slack_api_url_it_is_given(tmp_path: Path, slack) -> None:
    """The real entry point in Slack mode: SLACK_BOT_TOKEN and SLACK_API_URL point it at the stand-in."""
    slack.add_channel("C0CHIPS01", "chip-supply-chain")
    slack.add_channel("C0CHINA01", "china-tech")
    slack.add_channel("C0AIHW001", "ai-hardware")
    environ = {
        "PATH": "/usr/bin:/bin",
        "SLACK_BOT_TOKEN": slack.state.token,
        "SLACK_API_URL": slack.url,
        "BOT_RULES": str(DEMO_RULES),
        "BOT_DB": str(tmp_path / "state.json"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--once"], env=environ, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # nothing printed: everything went to Slack
    assert {p["channel"] for p in slack.posts} == {"C0CHIPS01", "C0CHINA01", "C0AIHW001"}
    assert len(slack.posts) == 9  # backfill: 3 newest matches for each of the three channels
    assert "slack connected team=Test Team" in done.stderr
    assert slack.state.token not in done.stderr


def test_a_signing_secret_without_a_bot_token_says_the_slack_app_is_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {"BOT_RULES": str(DEMO_RULES), "BOT_DB": str(tmp_path / "s.json"), "SLACK_SIGNING_SECRET": "s3"}
    code, _ = run_cli(["run", "--once"], environ)
    assert code == 0
    assert "SLACK_BOT_TOKEN is not: the Slack app is off" in capsys.readouterr().err


def test_every_state_file_beside_bot_db_is_readable_by_its_owner_only(tmp_path: Path, slack) -> None:
    """Journals, outbox, archive and lock hold feed URLs with tokens and people's watch terms. Two runs of
    the real process under a permissive umask (the second appends to the journals and takes the lock
    again), and a file an earlier version left 0644 is tightened."""
    for channel, name in (("C0CHIPS01", "chip-supply-chain"), ("C0CHINA01", "china-tech")):
        slack.add_channel(channel, name)
    slack.add_channel("C0AIHW001", "ai-hardware")
    folder = tmp_path / "state"
    folder.mkdir()
    environ = {
        "PATH": "/usr/bin:/bin",
        "SLACK_BOT_TOKEN": slack.state.token,
        "SLACK_API_URL": slack.url,
        "BOT_RULES": str(DEMO_RULES),
        "BOT_DB": str(folder / "state.json"),
    }

    def run_once() -> None:
        done = subprocess.run(
            [sys.executable, "-m", "bot", "run", "--once"],
            env=environ,
            cwd=REPO,
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.umask(0o022),
        )
        assert done.returncode == 0, done.stderr

    run_once()
    (folder / "state.journal.jsonl").chmod(0o644)  # as the version before this one made it
    run_once()
    names = {path.name for path in folder.iterdir()}
    assert {"state.json", "state.journal.jsonl", "state.outbox.json", "state.archive.json"} <= names
    assert {"state.archive.journal.jsonl", "state.json.lock"} <= names
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in folder.iterdir()}
    assert modes == dict.fromkeys(names, oct(0o600))


def test_check_refuses_a_rules_file_whose_aliases_multiply_with_one_line(tmp_path: Path) -> None:
    """A billion-laughs-style rules.yaml, scaled down: one keyword list written once, walked again by each
    of 200 aliased channel entries. Each walk reports the list's one bad keyword, so the lines printed
    count the walks: the file is refused at the alias that crosses the bound, with one line, before any
    walk."""
    words = ", ".join(f"w{n:03}" for n in range(300))
    entries = "\n".join("  - *entry" for _ in range(200))
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "feeds:\n  - id: scmp\n    url: https://example.com/feed\n"
        "channels:\n"
        f"  - &entry\n    channel: C0CHIPS01\n    keywords: [{words}, 'ch*ip']\n"
        f"{entries}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "check"],
        env={"PATH": "/usr/bin:/bin", "BOT_RULES": str(rules)},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    problems = (out + err).strip().splitlines()
    # Each entry stands for 306 values: the 33rd alias (line 8 + 32) is the one over 10,000.
    assert problems == [
        f"{rules}:40: alias *entry takes the file over 10,000 values repeated through YAML aliases; write "
        "the values out, or nest fewer aliases"
    ]


def test_check_accepts_a_keyword_list_reused_through_an_alias(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "feeds:\n  - id: scmp\n    url: https://example.com/feed\n"
        "channels:\n"
        "  - channel: C0CHIPS01\n    keywords: &chips [Nexperia, TSMC, chip*]\n"
        "  - channel: C0CHINA01\n    keywords: *chips\n"
    )
    code, out = run_cli(["check"], {"BOT_RULES": str(rules)})
    assert code == 0, out


def test_check_names_the_line_of_a_feed_visibility_it_does_not_know(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "feeds:\n  - id: scmp\n    url: https://example.com/feed\n    visibility: secret\n"
        "  - id: deals\n    url: https://example.com/deals\n    visibility: [public]\n"
        "  - id: news\n    url: https://example.com/news\n    visibility: public\n"
        "channels:\n  - channel: C0CHIPS01\n    keywords: [Nexperia]\n"
    )
    code = main(["check"], environ={"BOT_RULES": str(rules)})
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"{rules}:4: feeds[0].visibility: 'secret' is not one of: public or channels",
        f"{rules}:7: feeds[1].visibility: expected public or channels, got a list",
    ]
