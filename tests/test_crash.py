"""The real process, killed with SIGKILL at the worst moment: while Slack holds the answer to a post it has
already carried out. The next start must find that post in the channel instead of posting it again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, SAMPLE_FEED
from tests.slack_standin import running_slack


def test_a_kill_while_a_post_is_in_flight_neither_loses_nor_repeats_it(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"feeds:\n  - id: scmp\n    url: {SAMPLE_FEED}\n"
        "channels:\n  - channel: CNEXPERIA1\n    keywords: [Nexperia]\n"
    )
    # Real time: the restarted process searches the channel's history by the time of its first attempt.
    with running_slack() as slack:
        slack.add_channel("CNEXPERIA1", "nexperia")
        environ = {
            "PATH": "/usr/bin:/bin",
            "SLACK_BOT_TOKEN": slack.state.token,
            "SLACK_API_URL": slack.url,
            "BOT_RULES": str(rules),
            "BOT_DB": str(tmp_path / "state.json"),
        }
        command = [sys.executable, "-m", "bot", "run", "--once"]
        slack.fail_next("chat.postMessage", hang=True)
        process = subprocess.Popen(
            command, env=environ, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            assert slack.hanging.wait(timeout=30), "the bot never posted"
            process.kill()  # SIGKILL: no handler runs, nothing is flushed
            process.wait(timeout=10)
        finally:
            process.kill()
            slack.release()
        assert len(slack.posts) == 1  # Slack has the alert; the bot never heard so

        again = subprocess.run(command, env=environ, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert "alert found in channel channel=CNEXPERIA1" in again.stderr
        assert len(slack.posts) == 1
        assert slack.calls("conversations.history")  # it looked rather than guessed
