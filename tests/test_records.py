"""Every published number can be re-derived from data in the repository: the tables of docs/results.md and the
README's quote are `harness show --format csv` of the committed record databases under results/record/."""

from __future__ import annotations

import subprocess

from benchmarks.record_tables import DOCUMENTS, MARKER, regenerate
from conftest import REPO


def _markers(document) -> list:
    return [m for line in document.read_text(encoding="utf-8").splitlines() if (m := MARKER.match(line.strip()))]


def test_every_marked_table_is_what_its_committed_database_gives():
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        assert regenerate(text) == text, f"{document.name}: run python benchmarks/record_tables.py and review the diff"


def test_the_record_databases_are_committed_and_the_results_carry_their_tables():
    results, readme = (_markers(d) for d in DOCUMENTS)
    assert len(results) >= 3 and len(readme) >= 1
    tracked = subprocess.run(["git", "ls-files", "results/record"], capture_output=True, text=True, cwd=REPO).stdout.split()
    for marker in results + readme:
        assert marker["db"] in tracked, f"{marker['db']} is not committed"
