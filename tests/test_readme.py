"""The README's rules examples are valid rules files: what people copy from it must pass `check`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import load_rules
from tests.conftest import REPO

EXAMPLES = [
    block
    for block in re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    if "feeds:" in block
]


def test_the_readme_has_rules_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("example", EXAMPLES)
def test_each_rules_example_in_the_readme_loads(example: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(example)
    assert load_rules(rules).channels


def test_every_test_the_readme_names_as_evidence_exists() -> None:
    """The Reliability section backs each guarantee with a named test: a renamed or deleted test must not
    leave a guarantee without one."""
    named = set(re.findall(r"`(test_\w+)`", (REPO / "README.md").read_text()))
    defined = {
        name
        for path in (REPO / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), re.M)
    }
    assert len(named) >= 20
    assert sorted(named - defined) == []
