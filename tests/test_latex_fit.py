"""The LaTeX a report writes drops into a paper: every file compiles in a two-column and a one-column
article, inside the float its comment names, with no box wider than the line.

Two real runs: the quickstart's record (one model, eleven columns) and the same rows under seventeen
model names (a Table 1-sized grid), one of them in Greek, accented and CJK characters.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, report_tool
from harness_reports.render import write_report

QUICKSTART = REPO / "results" / "record" / "quickstart.sqlite"
# RobustBench's names, and one a user could type: Greek, accents and a character pdflatex has no glyph for
MODEL_NAMES = ("Carmon2019Unlabeled", "Gowal2020Uncovering_28_10_extra", "Rebuffi2021Fixing_70_16_cutmix_extra",
                     "Sehwag2021Proxy", "Rade2021Helper_R18_ddpm", "Wang2023Better_WRN-70-16", "Wong2020Fast",
                     "Engstrom2019Robustness", "Rice2020Overfitting", "Zhang2019Theoretically", "Wu2020Adversarial",
                     "Pang2022Robustness_WRN70_16", "Debenedetti2022Light_XCiT-L12", "Addepalli2022Efficient_WRN_34_10",
                     "Huang2022Revisiting_WRN-A4", "Peng2023 σ-smoothed, Zürich 中")
OVERFULL = re.compile(r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)")
# the natural and the line width of every box the files' own \harnessfit scales, read back from the log
MEASURED_RESIZE = (r"\let\stockresizebox\resizebox\renewcommand{\resizebox}[3]{\sbox0{#3}"
                   r"\typeout{NATURAL \the\wd0\space LINE \the\linewidth}\stockresizebox{#1}{#2}{#3}}")


def _widened(source: Path, out: Path, names: tuple[str, ...]) -> Path:
    """A copy of a run whose rows are repeated under more model names, as a grid of that many models."""
    shutil.copy(source, out)
    conn = sqlite3.connect(out)
    run_id, plugins = conn.execute("SELECT run_id, plugins FROM runs").fetchone()
    plugins = json.loads(plugins)
    model, original = plugins["models"][0], plugins["models"][0]["label"]
    for i, name in enumerate(names):
        plugins["models"].append({**model, "label": name})
        for table in ("results", "units"):
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            chosen = ", ".join("?" if c == "model" else f"unit_key || '-{i}'" if c == "unit_key" else c
                               for c in columns)
            conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {chosen} FROM {table} "
                         f"WHERE run_id = ? AND model = ?", [name, run_id, original])
    conn.execute("UPDATE runs SET plugins = ?", [json.dumps(plugins)])
    conn.commit()
    conn.close()
    return out


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("latex")
    out = {}
    for name, db in (("quickstart", shutil.copy(QUICKSTART, tmp / "quickstart.sqlite")),
                     ("seventeen models", _widened(QUICKSTART, tmp / "wide.sqlite", MODEL_NAMES))):
        write_report(db, tmp / name.replace(" ", "-"), formats="latex")
        out[name] = tmp / name.replace(" ", "-")
    return out


def _float(tex: str) -> str | None:
    """The float a file's comment asks for: table (fits a column), table* (set for the text width), none (figures)."""
    if "\\begin{figure}" in tex or "no figures" in tex:
        return None
    return "table*" if "Width: set for \\textwidth" in tex else "table"


def _compile(report: Path, document_class: str, work: Path) -> str:
    shutil.copytree(report, work)
    body = []
    for path in sorted(work.glob("*.tex")):
        environment = _float(path.read_text())
        inner = f"\\typeout{{FILE {path.stem}}}\\input{{{path.stem}}}"
        body.append(inner if environment is None else
                    f"\\begin{{{environment}}}[p]\\centering {inner}\\end{{{environment}}}\\clearpage")
    (work / "paper.tex").write_text(
        f"\\documentclass[{document_class}]{{article}}\n\\usepackage[utf8]{{inputenc}}\n"
        f"\\usepackage{{booktabs,graphicx,array}}\n{MEASURED_RESIZE}\n\\begin{{document}}\n" + "\n".join(body)
        + "\n\\end{document}\n")
    done = subprocess.run([report_tool("pdflatex"), "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
                          cwd=work, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:]
    return (work / "paper.log").read_text(errors="replace")


@pytest.mark.parametrize("document_class", ["twocolumn", "onecolumn"])
@pytest.mark.parametrize("grid", ["quickstart", "seventeen models"])
def test_every_tex_file_fits_the_line_of_a_two_and_a_one_column_article(reports, grid, document_class, tmp_path):
    log = _compile(reports[grid], document_class, tmp_path / "paper")
    too_wide = [float(points) for points in OVERFULL.findall(log)]
    assert max(too_wide, default=0.0) <= 1.0, f"overfull boxes (pt): {too_wide}"
    assert log.count("NATURAL") == 5     # main, std, paired, adaptive, flips each went through \harnessfit


def test_the_compact_tables_need_no_shrinking_in_the_float_they_name(reports, tmp_path):
    """Shrinking is the last resort: the quickstart's tables, eleven columns included, fit their float as set."""
    log = _compile(reports["quickstart"], "twocolumn", tmp_path / "paper")
    widths = [(float(natural), float(line)) for natural, line in re.findall(r"NATURAL ([\d.]+)pt\s*LINE ([\d.]+)pt", log)]
    assert len(widths) == 5
    assert all(natural <= line + 0.5 for natural, line in widths), widths


def test_columns_no_cell_evaluated_are_left_out_and_named_in_a_comment(reports, tmp_path):
    """The quickstart evaluates every column; without its adaptive attack the adaptive worst case is
    never evaluated, and the table says so in a comment instead of printing an empty column."""
    db = shutil.copy(QUICKSTART, tmp_path / "transfer-only.sqlite")
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM results WHERE adaptive = 1")
    conn.execute("DELETE FROM units WHERE adaptive = 1")
    plugins = json.loads(conn.execute("SELECT plugins FROM runs").fetchone()[0])
    plugins["attacks"] = [a for a in plugins["attacks"] if not a["adaptive"]]
    conn.execute("UPDATE runs SET plugins = ?", [json.dumps(plugins)])
    conn.commit()
    conn.close()
    write_report(db, tmp_path / "out", formats="latex")
    main_tex = (tmp_path / "out" / "main.tex").read_text()
    header = next(line for line in main_tex.splitlines() if line.startswith("Defense &"))
    assert "(transfer)" in header and "(adaptive)" not in header and "Adaptive" not in header
    assert "% Not evaluated in this run, so not printed: Worst Case (adaptive)." in main_tex
    assert "(adaptive)" in (reports["quickstart"] / "main.tex").read_text()


def test_one_repeat_prints_a_dash_for_the_spread_not_zero(tmp_path):
    db = shutil.copy(QUICKSTART, tmp_path / "one-repeat.sqlite")
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM results WHERE repeat > 0")
    conn.execute("UPDATE runs SET repeats = 1")
    conn.commit()
    conn.close()
    write_report(db, tmp_path / "out", formats="latex")
    rows = [line for line in (tmp_path / "out" / "std.tex").read_text().splitlines() if line.startswith("\\hspace")]
    assert rows and all(line.count("---") == line.count("&") and "0.00" not in line for line in rows)


def test_the_adaptive_table_reads_as_the_html_one_with_interval_and_p(reports):
    tex = (reports["quickstart"] / "adaptive.tex").read_text()
    assert "Taken by" in tex and "Change" not in tex
    hedge = next(line for line in tex.splitlines() if "& Hedge &" in line)
    cells = [cell.strip() for cell in hedge.rstrip(" \\").split("&")]
    transfer, adaptive, taken, interval, p = cells[2:]
    assert float(taken.strip("$")) == pytest.approx(float(transfer) - float(adaptive))   # the HTML's sign
    low, high = (float(v.strip(" $")) for v in interval.split(","))
    assert low < float(taken.strip("$")) < high and 0 < float(p) <= 1
