"""Warnings carry stable ids, each one documented, each one produced by some check."""

from __future__ import annotations

import dataclasses
import re
import shutil

import pytest

from conftest import REPO, harness_cli
from harness.analysis.notices import NOTICE_IDS, Notice
from harness.analysis.stats import wilson
from harness.storage.store import Store
from harness_reports.reproduction import VERDICT_HALF_WIDTH, examples_for
from harness_reports.warnings import small_sample

FASTAT40 = REPO / "results" / "record" / "fastat40.sqlite"
PAPER_RUN = "2770dc2a1aff"


def test_every_id_has_its_paragraph_in_docs_warnings_and_no_other_is_documented():
    documented = re.findall(r"^## (\S+)$", (REPO / "docs" / "warnings.md").read_text(), re.M)
    assert sorted(documented) == sorted(NOTICE_IDS)


def test_every_id_is_given_by_some_check():
    source = "\n".join(p.read_text() for folder in ("harness", "reports") for p in (REPO / folder).rglob("*.py"))
    given = set(re.findall(r'Notice\(\s*"([a-z-]+)"', source))
    assert given == set(NOTICE_IDS)


def test_an_unknown_id_is_refused():
    with pytest.raises(ValueError, match="unknown warning id 'typo'"):
        Notice("typo", "text")


def test_show_prints_each_warning_under_its_id(tmp_path):
    """The paper-preset record has no adaptive attack: its test-time defenses are transfer-only."""
    db = shutil.copy(FASTAT40, tmp_path / "fastat40.sqlite")
    out = harness_cli("show", "--db", str(db), "--run", PAPER_RUN).stdout
    (line,) = [line for line in out.splitlines() if line.startswith("warning [transfer-only]: ")]
    assert "of Random [random], Hedge [hedge] is the transfer protocol only" in line


def test_small_sample_fires_below_the_examples_a_5_point_interval_needs():
    with Store(FASTAT40, readonly=True) as store:
        run = store.run(PAPER_RUN)
    (note,) = small_sample(run)                                       # 200 examples: ±6.9 points at 50%
    enough = examples_for(VERDICT_HALF_WIDTH)
    low, high = wilson(0.5, enough)
    assert 100 * (high - low) / 2 <= 5.0
    low, high = wilson(0.5, enough - 1)
    assert 100 * (high - low) / 2 > 5.0
    assert note.id == "small-sample" and "±6.9 points" in note.text and f"about {enough} examples" in note.text
    assert small_sample(dataclasses.replace(run, n_examples=enough)) == []
    assert small_sample(dataclasses.replace(run, n_examples=enough - 1)) != []
