"""The README tells the truth: its settings table is the settings, its commands exist."""

from __future__ import annotations

import re

from scripts.settings_table import END, START, table
from tests.harness import ROOT

README = (ROOT / "README.md").read_text()


def test_settings_table_matches_the_code() -> None:
    block = README.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == table(), "run: python scripts/settings_table.py --write"


def test_make_targets_named_in_the_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"`make (\w+)`", README)):
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README and "make test" in (ROOT / ".ci/run").read_text()
