"""Every figure a report draws reads at the width of a paper's column: measured from the PDF files
themselves (page width, and the size of every font the page sets), as \\includegraphics[width=\\linewidth]
would shrink them into a 3.3 in column.

Real runs: the quickstart's record and the golden run (flips, images, a sweep, a heat map); the ladder
and Lipschitz-gap figures, which neither draws, from content objects with long labels.
"""

from __future__ import annotations

import re
import shutil
import zlib
from pathlib import Path

import pytest

from conftest import REPO
from harness_reports.comparisons import Convergence
from harness_reports.content import FlipRow, Gaps
from harness_reports.figures import COLUMN_IN, SMALLEST_PT, _save, convergence_figure, flips_figure, gaps_figure
from harness_reports.render import write_report

COLUMN_PT = COLUMN_IN * 72


def _page_width_pt(pdf: bytes) -> float:
    x0, _, x1, _ = (float(v) for v in re.search(rb"/MediaBox \[([^\]]*)\]", pdf).group(1).split())
    return x1 - x0


def _font_sizes_pt(pdf: bytes) -> set[float]:
    """The size of every font selected in the page's content streams (the Tf operator)."""
    sizes: set[float] = set()
    for stream in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            content = zlib.decompress(stream.group(1))
        except zlib.error:
            continue
        sizes |= {float(v) for v in re.findall(rb"/F\w* ([\d.]+) Tf", content)}
    return sizes


def _smallest_text_at_column_width(path: Path) -> float:
    pdf = path.read_bytes()
    sizes = _font_sizes_pt(pdf)
    assert sizes, f"{path.name}: no text found"
    return min(sizes) * min(1.0, COLUMN_PT / _page_width_pt(pdf))


@pytest.fixture(scope="module")
def figure_files(tmp_path_factory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("figures")
    for name, db in (("quickstart", REPO / "results" / "record" / "quickstart.sqlite"),
                     ("golden", REPO / "tests" / "golden" / "run.sqlite")):
        write_report(shutil.copy(db, tmp / f"{name}.sqlite"), tmp / name, formats="latex")
    ladders = [Convergence("Carmon2019Unlabeled", f"APGD-DLR-T (targeted, {k} targets)", defense, (1, 2, 4),
                           (41.0, 39.5, 39.0), None) for k in (3, 9) for defense in ("Random noise", "Hedge defense")]
    _save(convergence_figure(ladders, "Carmon2019Unlabeled"), tmp / "synthetic", "convergence-1", "")
    _save(gaps_figure(Gaps("Gowal2020Uncovering_28_10_extra", (0.5, 1.2, 2.0, 0.1), (-0.4, -1.0))),
          tmp / "synthetic", "lipschitz-1", "")
    return sorted(tmp.rglob("figures/*.pdf")) + sorted((tmp / "synthetic").glob("*.pdf"))


def test_the_reports_draw_every_kind_of_figure(figure_files):
    kinds = {path.stem.split("-")[0] for path in figure_files}
    assert kinds == {"flips", "examples", "sweep", "heatmap", "convergence", "lipschitz"}


def test_every_figure_is_a_column_wide_and_its_text_is_at_least_7_pt_there(figure_files):
    for path in figure_files:
        width = _page_width_pt(path.read_bytes())
        assert width <= COLUMN_PT + 2, f"{path.name} is {width / 72:.2f} in wide"
        assert _smallest_text_at_column_width(path) >= SMALLEST_PT - 0.01, path.name


def test_every_figure_is_written_as_pdf_png_and_svg(figure_files):
    for path in figure_files:
        assert path.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
        assert "<svg" in path.with_suffix(".svg").read_text()


def test_the_measure_fails_a_figure_drawn_too_wide(tmp_path):
    """The check above can fail: a figure drawn 8.6 in wide with 7 pt text is about 3 pt in a column."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.6, 2.8))
    ax.bar(range(5), [1, 2, 3, 2, 1], label="Hedge: FtoT")
    ax.legend(fontsize=7)
    _save(fig, tmp_path, "wide", "")
    assert _smallest_text_at_column_width(tmp_path / "wide.pdf") < 4


def test_figure_2a_shows_a_zero_count_and_each_attacks_net_change():
    rows = [FlipRow("m", "PGD", "Hedge", ftot=3.0, ttof=0.0, ftof=0.0, n=50),
            FlipRow("m", "CW", "Hedge", ftot=0.0, ttof=2.0, ftof=1.0, n=50)]
    fig = flips_figure(rows, "m")
    (ax,) = fig.axes
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("0") == 2 and "3" in texts and "2" in texts      # zero-height bars still say 0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["PGD\nnet +3", "CW\nnet −2"]
    assert ax.get_legend() is None and {"FtoT ↑", "TtoF ↓"} <= set(texts)   # direct labels, no legend
