"""`harness report`: golden files, escaping, LaTeX that compiles, HTML that renders, and honest partial reports.

The golden database (tests/golden/run.sqlite) is a real run of tests/golden/grid.toml on the digits
model; tests/golden/regenerate.py rebuilds it and the expected files.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import report_tool
from harness.analysis.aggregate import cells
from harness.analysis.stats import Paired, mcnemar_exact, newcombe_paired, wilson
from harness.cli import main
from harness.storage.store import Store
from harness_reports.content import build_content
from harness_reports.naming import display_names
from harness_reports.render import latex_escape, write_report
from harness_reports.warnings import black_box_beats_white_box, zero_gradients

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def golden_db(tmp_path) -> Path:
    copy = tmp_path / "run.sqlite"
    shutil.copy(GOLDEN / "run.sqlite", copy)
    return copy


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    shutil.copy(GOLDEN / "run.sqlite", tmp / "run.sqlite")
    write_report(tmp / "run.sqlite", tmp / "out")
    return tmp / "out"


# --- golden files ---------------------------------------------------------------------------

def test_markdown_and_latex_match_the_golden_files_byte_for_byte(report):
    expected = sorted(p.name for p in (GOLDEN / "expected").iterdir())
    assert expected == ["adaptive.tex", "facts.tex", "figures.tex", "flips.tex", "main.tex", "paired.tex", "report.md", "std.tex"]
    for name in expected:
        assert (report / name).read_bytes() == (GOLDEN / "expected" / name).read_bytes(), (
            f"{name} differs from tests/golden/expected/{name}; if the change is intended, run "
            "python3 tests/golden/regenerate.py --render and review the diff")


def test_rendering_twice_gives_identical_files_figures_included(golden_db, tmp_path):
    write_report(golden_db, tmp_path / "a")
    write_report(golden_db, tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert any(str(f).endswith(".pdf") for f in files) and any(str(f).endswith(".svg") for f in files)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_the_report_leaves_the_database_untouched(golden_db, tmp_path):
    before = golden_db.read_bytes()
    write_report(golden_db, tmp_path / "out")
    assert golden_db.read_bytes() == before
    assert not Path(f"{golden_db}-wal").exists()


# --- the tables' numbers come from the rows -----------------------------------------------------

def test_main_table_cells_are_the_means_over_repeats_of_the_stored_rows(golden_db):
    store = Store(str(golden_db), readonly=True)
    content = build_content(store)
    rows = store.results(store.run().run_id)
    group = content.main.groups[0]
    by_defense = {row.defense: row for row in group.rows}
    pgd = content.main.keys.index("pgd")
    for label, shown in (("none", "−"), ("random", "Random"), ("Hedge <0.1>", "Hedge <0.1>")):
        expected = rows[(rows.attack == "pgd") & (rows.defense == label)].groupby("repeat").correct.mean().mean() * 100
        assert by_defense[shown].cells[pgd].mean == pytest.approx(expected)
    # worst case (adaptive) = per-example AND over every attack, clean included, then the mean over repeats
    worst = content.main.keys.index("worst case (adaptive)")
    for label, shown in (("none", "−"), ("Hedge_0.05", "Hedge_0.05")):
        sub = rows[rows.defense == label]
        expected = sub.groupby(["repeat", "idx"]).correct.min().groupby("repeat").mean().mean() * 100
        assert by_defense[shown].cells[worst].mean == pytest.approx(expected)


def test_the_best_value_of_each_column_is_bold_within_the_model_group(golden_db):
    content = build_content(Store(str(golden_db), readonly=True))
    for group in content.main.groups:
        for j in range(len(content.main.columns)):
            values = [row.cells[j] for row in group.rows if row.cells[j] is not None]
            top = max(round(c.mean, 2) for c in values)
            assert [c.best for c in values] == [round(c.mean, 2) == top for c in values]
    assert not any(c.best for g in content.std.groups for r in g.rows for c in r.cells if c)


def test_adaptive_table_sets_transfer_against_adaptive_worst_case(golden_db):
    content = build_content(Store(str(golden_db), readonly=True))
    assert content.has_adaptive
    assert [r.defense for r in content.adaptive] == ["Random", "Hedge_0.05", "Hedge <0.1>"]
    main = {r.defense: r for r in content.main.groups[0].rows}
    keys = content.main.keys
    for r in content.adaptive:
        assert r.transfer.mean == main[r.defense].cells[keys.index("worst case (transfer)")].mean
        assert r.adaptive.mean == main[r.defense].cells[keys.index("worst case (adaptive)")].mean
        assert r.adaptive.mean <= r.transfer.mean  # the adaptive column takes the AND over more attacks


def test_sweeps_and_heat_map_are_found_and_hold_the_table_values(golden_db):
    content = build_content(Store(str(golden_db), readonly=True))
    by_parameter = {s.parameter: s for s in content.sweeps}
    assert set(by_parameter) == {"eps_d", "eps"}
    eps_d = by_parameter["eps_d"]
    assert eps_d.values == (0.05, 0.1) and eps_d.labels == ("Hedge_0.05", "Hedge <0.1>")
    main = {r.defense: r for r in content.main.groups[0].rows}
    pgd = content.main.keys.index("pgd")
    assert eps_d.accuracy["PGD"] == (main["Hedge_0.05"].cells[pgd].mean, main["Hedge <0.1>"].cells[pgd].mean)
    eps = by_parameter["eps"]
    assert eps.values == (0.05, 0.1) and eps.labels == ("PGD at 50% & half ε", "pgd")
    (heat,) = content.heatmaps
    assert heat.eps_a == (0.05, 0.1) and heat.eps_d == (0.05, 0.1)
    half = content.main.keys.index("PGD at 50% & half ε")
    assert heat.accuracy[0][1] == main["Hedge <0.1>"].cells[half].mean


def test_examples_figure_shows_real_flips(golden_db):
    content = build_content(Store(str(golden_db), readonly=True))
    assert {e.flip for e in content.examples} == {"FtoT", "TtoF"}
    for e in content.examples:
        assert (e.pred_adv != e.label and e.pred_defended == e.label) if e.flip == "FtoT" else \
            (e.pred_adv == e.label and e.pred_defended != e.label)
        assert 0 < e.ssim_adv <= 1 and e.clean_png.startswith(b"\x89PNG")


# --- escaping ---------------------------------------------------------------------------------

def test_latex_escapes_the_specials_in_names(report):
    main_tex = (report / "main.tex").read_text()
    assert r"digits\_fgsm-rs \#1" in main_tex
    assert r"PGD at 50\%\\\& half $\varepsilon$" in main_tex      # a long header, on two lines
    assert latex_escape("a_b%c&d#e") == r"a\_b\%c\&d\#e"
    assert latex_escape("σ=0.5 Σ café Zürich x² 中") == r"$\sigma$=0.5 $\Sigma$ caf\'{e} Z\"{u}rich x2 ?"
    assert r"\emph{digits\_fgsm-rs \#1}" in main_tex and r"\toprule" in main_tex and r"\textbf{" in main_tex


def test_html_autoescapes_names_from_the_config(report):
    html = (report / "report.html").read_text()
    assert "Hedge &lt;0.1&gt;" in html and "<0.1>" not in html
    assert "PGD at 50% &amp; half ε" in html


def test_html_is_self_contained(report):
    html = (report / "report.html").read_text()
    assert "<svg" in html and 'src="http' not in html and "<link" not in html
    assert "95% Wilson interval" in html  # the tooltips


# --- the quality bar: LaTeX compiles, HTML renders ----------------------------------------------------

def test_pdflatex_compiles_a_document_that_inputs_every_tex_file(report, tmp_path):
    pdflatex = report_tool("pdflatex")
    shutil.copytree(report, tmp_path / "r")
    inputs = "\n".join(f"\\input{{{p.stem}}}\n\\clearpage" for p in sorted((tmp_path / "r").glob("*.tex")))
    (tmp_path / "r" / "doc.tex").write_text("\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n"
                                            "\\usepackage{booktabs,graphicx,array}\n\\begin{document}\n"
                                            f"{inputs}\n\\end{{document}}\n")
    done = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path / "r",
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "r" / "doc.pdf").stat().st_size > 10_000


def test_html_report_renders_in_headless_chromium_without_console_errors(report, tmp_path):
    chromium = report_tool("chromium")
    url = (report / "report.html").resolve().as_uri()
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
              "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    assert 'id="main-table"' in dom.stdout and "<th>Nat-Acc.</th>" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run(common + ["--window-size=1300,900", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    table_band = pixels[150:450]  # where the main table sits, below the title
    dark = (table_band < 100).mean()
    assert 0.01 < dark < 0.5, f"the table area is {dark:.1%} dark: the page did not render a table"
    rules = [(row < 60).mean() for row in table_band]
    assert max(rules) > 0.5, "no booktabs-style horizontal rule drawn across the table"


# --- empty and partial runs ---------------------------------------------------------------------

def test_an_empty_database_gives_a_report_that_says_so(tmp_path):
    Store(str(tmp_path / "empty.sqlite"))  # tables, no runs
    write_report(tmp_path / "empty.sqlite", tmp_path / "out")
    assert "holds no runs yet" in (tmp_path / "out" / "report.md").read_text()
    assert "holds no runs yet" in (tmp_path / "out" / "report.html").read_text()
    assert "No results to tabulate" in (tmp_path / "out" / "main.tex").read_text()


def test_a_partial_run_names_what_is_missing_and_still_renders(golden_db, tmp_path):
    conn = sqlite3.connect(golden_db)
    key = conn.execute("SELECT unit_key FROM units WHERE attack = 'square' AND repeat = 1").fetchone()[0]
    conn.execute("DELETE FROM results WHERE unit_key = ? AND idx >= 15", [key])
    conn.execute("UPDATE units SET done = 15, finished = 0 WHERE unit_key = ?", [key])
    conn.execute("UPDATE runs SET ended = NULL")
    conn.commit()
    conn.close()
    write_report(golden_db, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "square (repeat 1, defenses none, random, Hedge\\_0.05, Hedge \\<0.1\\>): 15 of 40 examples done" in md
    assert "Resume with: harness run --grid tests/golden/grid.toml" in md
    content = build_content(Store(str(golden_db), readonly=True))
    worst = content.main.groups[0].rows[0].cells[content.main.keys.index("worst case (transfer)")]
    assert worst.n == 15  # only examples reached by every attack count in the repeat that is incomplete


def test_a_run_with_no_rows_yet_does_not_crash(golden_db, tmp_path):
    conn = sqlite3.connect(golden_db)
    conn.execute("DELETE FROM results")
    conn.execute("DELETE FROM examples")
    conn.execute("UPDATE units SET done = 0, finished = 0")
    conn.commit()
    conn.close()
    write_report(golden_db, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "no results are stored for this run yet" in md and "0 of 40 examples done" in md


def test_cli_report_and_its_errors(golden_db, tmp_path, capsys):
    assert main(["report", "--db", str(golden_db), "--out", str(tmp_path / "o"), "--format", "markdown"]) == 0
    assert (tmp_path / "o" / "report.md").exists() and not (tmp_path / "o" / "report.html").exists()
    assert main(["report", "--db", str(golden_db), "--out", str(tmp_path / "o"), "--format", "pdf"]) == 2
    assert "unknown format(s) pdf" in capsys.readouterr().err
    assert main(["report", "--db", str(tmp_path / "nope.sqlite"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.sqlite does not exist" in capsys.readouterr().err
    assert main(["report", "--db", str(golden_db), "--out", str(tmp_path / "o"), "--run", "zzz"]) == 2
    assert "matches 0 runs" in capsys.readouterr().err


# --- confidence intervals and the automatic checks -------------------------------------------------

def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Table I: 81/263 → 0.2553–0.3662; 15/148 → 0.0624–0.1605; 0/20 → 0–0.1611
    assert wilson(81 / 263, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson(15 / 148, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    assert wilson(0.0, 20) == pytest.approx((0.0, 0.1611), abs=5e-5)


def test_paired_interval_and_mcnemar_match_published_and_independent_values():
    from scipy.stats import binomtest

    # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), ch. 8: complete response
    # before and after consolidation therapy (Cavo et al., 2012), [[59, 6], [16, 80]]: Newcombe's square-and-add
    # (method 10) interval −0.0621 (−0.1186 to −0.0046)
    low, high = newcombe_paired(59, 6, 16, 80)
    assert (low, high) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    assert Paired(161, 59, 6, 16, 80).difference == pytest.approx(-0.0621, abs=5e-5)
    for b, c in ((6, 16), (0, 5), (7, 7), (1, 30)):
        assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c).pvalue, rel=1e-12)


def _newcombe_10_from_statsmodels(both: int, b: int, c: int, neither: int) -> tuple[float, float]:
    """Newcombe (1998), method 10, written out from the paper with statsmodels' Wilson limits."""
    from statsmodels.stats.proportion import proportion_confint

    n = both + b + c + neither
    p1, p2 = (both + b) / n, (both + c) / n
    l1, u1 = proportion_confint(both + b, n, alpha=0.05, method="wilson")
    l2, u2 = proportion_confint(both + c, n, alpha=0.05, method="wilson")
    margins = (both + b) * (c + neither) * (both + c) * (b + neither)
    excess = both * neither - b * c
    corrected = max(abs(excess) - n / 2, 0) * (1 if excess >= 0 else -1)   # continuity-corrected phi
    phi = corrected / margins ** 0.5 if margins else 0.0
    delta = ((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2) ** 0.5
    epsilon = ((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2) ** 0.5
    return p1 - p2 - delta, p1 - p2 + epsilon


def test_the_reports_paired_numbers_equal_an_independent_computation_on_the_golden_run(golden_db):
    """Every paired row of the committed run against counts taken straight from SQL, scipy's binomial test
    and the interval rebuilt from statsmodels' Wilson limits; over repeats, the mean and spread of the
    per-repeat differences, the widest interval and the largest p-value."""
    from scipy.stats import binomtest

    store = Store(str(golden_db), readonly=True)
    content = build_content(store)
    run = store.run()
    rows = pd.read_sql_query("SELECT attack, defense, repeat, idx, correct FROM results WHERE run_id = ?",
                             store.db.conn, params=[run.run_id])
    names = display_names(run)
    checked = 0
    for pair in content.paired:
        attack = next((a for a in run.labels("attacks") if names.get(a, a) == pair.what), None)
        if attack is None:
            continue  # a worst-case column: the AND is checked in test_main_table_cells_...
        defense = next(d for d in run.labels("defenses") if names.get(d, d) == pair.first)
        reference = next(d for d in run.labels("defenses") if names.get(d, d) == pair.second)
        diffs, lows, highs, ps = [], [], [], []
        for repeat in range(run.repeats):
            sel = rows[(rows.attack == attack) & (rows.repeat == repeat)]
            a = sel[sel.defense == defense].set_index("idx").correct
            r = sel[sel.defense == reference].set_index("idx").correct.reindex(a.index)
            both, b, c = int(((a == 1) & (r == 1)).sum()), int(((a == 1) & (r == 0)).sum()), int(((a == 0) & (r == 1)).sum())
            neither = len(a) - both - b - c
            low, high = _newcombe_10_from_statsmodels(both, b, c, neither)
            diffs.append((b - c) / len(a) * 100)
            lows.append(low * 100)
            highs.append(high * 100)
            ps.append(binomtest(b, b + c).pvalue if b + c else 1.0)
        assert pair.difference == pytest.approx(np.mean(diffs), abs=1e-9)
        assert pair.spread == pytest.approx(np.std(diffs, ddof=1), abs=1e-9)
        assert pair.p_value == pytest.approx(max(ps), rel=1e-9)
        same_side = all(lo > 0 for lo in lows) or all(hi < 0 for hi in highs)
        assert pair.low == pytest.approx(min(lows) if same_side else min(min(lows), 0.0), abs=1e-6)
        assert pair.high == pytest.approx(max(highs) if same_side else max(max(highs), 0.0), abs=1e-6)
        checked += 1
    assert checked >= 9   # three defenses × three attacks of the golden grid


def test_examples_needed_is_the_first_size_whose_paired_interval_excludes_zero():
    pair = Paired(50, 30, 3, 5, 12)
    assert not pair.distinguishable
    n = pair.examples_needed()
    assert n is not None and n > 50
    scaled = lambda m: Paired(m, round(30 * m / 50), round(3 * m / 50), round(5 * m / 50),  # noqa: E731
                              m - round(30 * m / 50) - round(3 * m / 50) - round(5 * m / 50))
    assert scaled(n).distinguishable and not scaled(n - 1).distinguishable
    assert Paired(50, 30, 4, 4, 12).examples_needed() is None   # no difference: nothing to tell apart


def test_black_box_beating_white_box_is_flagged():
    attacks = [{"label": "pgd", "access": "white-box"}, {"label": "square", "access": "black-box"}]
    table = pd.DataFrame({"model": ["m", "m"], "defense": ["none", "none"], "key": ["pgd", "square"],
                          "mean": [60.0, 40.0]})
    (note,) = black_box_beats_white_box(table, attacks)
    assert note.id == "black-box-beats-white-box" and "square (40.00%)" in note.text
    table["mean"] = [40.0, 60.0]
    assert black_box_beats_white_box(table, attacks) == []


def test_a_gradient_free_attack_through_the_defense_is_held_against_the_gradient_ones_through_it():
    attacks = [{"label": "pgd", "access": "white-box"}, {"label": "suite: BPDA-PGD", "access": "white-box",
                                                        "adaptive": True},
               {"label": "suite: RayS", "access": "black-box", "adaptive": True}]
    table = pd.DataFrame({"model": ["m"] * 3, "defense": ["tte"] * 3, "key": ["pgd", "suite: BPDA-PGD", "suite: RayS"],
                          "mean": [30.0, 60.0, 40.0]})
    # RayS through the defense beats BPDA through it, though not the transfer PGD: masking from the adaptive attacks
    (note,) = black_box_beats_white_box(table, attacks)
    assert "suite: RayS through the defense (40.00%)" in note.text and "suite: BPDA-PGD, 60.00%" in note.text
    table["mean"] = [30.0, 35.0, 40.0]
    assert black_box_beats_white_box(table, attacks) == []


def test_zero_gradient_with_attack_success_is_flagged(golden_db):
    store = Store(str(golden_db))
    rid = store.run().run_id
    assert zero_gradients(store, rid) == []  # the real run: every clean gradient is non-zero where attacks win
    rows = store.results(rid)
    clean_ok = rows[(rows.attack == "clean") & (rows.defense == "none") & (rows.correct == 1)]
    broken = rows[(rows.attack == "pgd") & (rows.defense == "none") & (rows.correct == 0)]
    idx = int(sorted(set(clean_ok.idx) & set(broken.idx))[0])
    store.db.execute("UPDATE results SET grad_norm = 0 WHERE run_id = ? AND attack = 'clean' AND idx = ?", [rid, idx])
    store.db.conn.commit()
    (note,) = zero_gradients(store, rid)
    assert note.id == "zero-gradient" and "digits_fgsm-rs #1" in note.text


def test_the_golden_run_recorded_what_reports_need():
    store = Store(str(GOLDEN / "run.sqlite"), readonly=True)
    run = store.run()
    assert {a["label"]: a["access"] for a in run.entries("attacks")}["square"] == "black-box"
    assert [d["params"].get("eps_d") for d in run.entries("defenses")][2:] == [0.05, 0.1]
    assert json.loads(run.classes)[:3] == ["0", "1", "2"]
    rows = cells(store, run)
    assert set(rows.n) == {40}


def test_an_attack_with_its_own_radius_is_generated_and_checked_within_it():
    store = Store(str(GOLDEN / "run.sqlite"), readonly=True)
    rows = store.results(store.run().run_id)
    half = rows[rows.attack == "PGD at 50% & half ε"]
    full = rows[rows.attack == "pgd"]
    assert half.linf.max() <= 0.05 + 1e-6 and half.linf.max() > 0.04
    assert full.linf.max() > 0.09


def test_markdown_cannot_be_broken_out_of_by_a_label_or_the_grid_file(tmp_path, registry):
    """A label full of markdown and HTML, and a grid file whose comment opens and closes code fences: the report's
    tables keep their shape and nothing lands outside a code block as raw HTML."""
    from conftest import digits_grid
    from harness.grid.reader import load_grid
    from harness.run.runner import run_grid

    hostile = "x | `y` *z* <img src=x onerror=alert(1)> [l](http://e)"
    attacks = f'[[attacks]]\nplugin = "pgd"\nlabel = "{hostile}"\nsteps = 2\n'
    path = digits_grid(tmp_path, n=10, attacks=attacks, extra='# ```\n# <img src=x onerror=alert(2)>\n# ````\n')
    grid = load_grid(path, registry)
    run_grid(grid, progress=False)
    write_report(grid.db, tmp_path / "out", "markdown")
    md = (tmp_path / "out" / "report.md").read_text()
    outside, fence = [], None
    for line in md.splitlines():
        if fence is None and line.startswith("```"):
            fence = line[:len(line) - len(line.lstrip("`"))]
        elif fence is not None and line == fence:
            fence = None
        elif fence is None:
            outside.append(line)
    assert fence is None and not re.search(r"(?<!\\)<img", "\n".join(outside))   # escaped, or inside code
    assert any("alert(2)" in line for line in md.splitlines()) and "alert(2)" not in "\n".join(outside)
    start = outside.index(next(line for line in outside if line.startswith("| Model | Defense |")))
    table = outside[start:outside.index("", start)]
    cells = [len(re.split(r"(?<!\\)\|", line)) for line in table]   # unescaped pipes delimit cells
    assert len(table) == 3 and len(set(cells)) == 1, table           # header, rule, one row: all the same width
    from harness_reports.render import markdown_escape

    assert "\n" not in markdown_escape("a\nb\x1b[31m") and markdown_escape("a|b") == "a\\|b"


def test_the_title_line_names_the_preset_and_what_it_changes(tmp_path):
    """The paper preset changes the worst case (no clean column) and the votes; a reader sees it first."""
    record = Path(__file__).parents[1] / "results" / "record" / "fastat40.sqlite"
    db = shutil.copy(record, tmp_path / "fastat40.sqlite")
    for run, preset in (("2770dc2a1aff", "paper"), ("37ec527209be", "honest")):
        out = tmp_path / run
        write_report(db, out, formats="html,markdown", run_id=run)
        title = (out / "report.md").read_text().split("\n## ")[0]
        assert f"**{preset} preset: " in title and ("without the clean column" in title) == (preset == "paper")
        assert f"<strong>{preset} preset: " in (out / "report.html").read_text()
