"""Render the README's pictures from the committed record databases, so that what the README shows is what the
harness writes: the main LaTeX table of a record run as it typesets in a two-column article (the column's
width), and that run's Figure 2a at column width.

    python scripts/readme_images.py            # rewrites docs/images/*.png

pdflatex renders the table; pypdfium2 (the test extras) rasterises the page, cropped to the table."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DB, RUN = REPO / "results" / "record" / "fastat40.sqlite", "37ec527209be"   # fastat40, honest preset
OUT = REPO / "docs" / "images"
DPI = 200


def render(out: Path = OUT) -> list[Path]:
    from harness_reports.render import write_report

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report"
        write_report(DB, report, formats="latex", run_id=RUN)
        table = out / "main-table.png"
        _typeset(report / "main.tex", Path(tmp) / "paper", table)
        figure = out / "figure-2a.png"
        shutil.copy(next((report / "figures").glob("flips-*.png")), figure)
    return [table, figure]


def _typeset(tex: Path, work: Path, png: Path) -> None:
    work.mkdir()
    shutil.copy(tex, work / tex.name)
    (work / "paper.tex").write_text(
        "\\documentclass[twocolumn]{article}\n\\usepackage[utf8]{inputenc}\n\\usepackage{booktabs,graphicx,array}\n"
        "\\pagestyle{empty}\n\\begin{document}\n\\begin{table}[t]\\centering\\input{main}\\end{table}\n"
        "\\end{document}\n")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=work, check=True,
                   capture_output=True, timeout=240)
    import pypdfium2

    page = pypdfium2.PdfDocument(work / "paper.pdf")[0]
    image = page.render(scale=DPI / 72).to_pil().convert("L")
    ink = np.argwhere(np.asarray(image) < 250)
    (top, left), (bottom, right) = ink.min(axis=0), ink.max(axis=0)
    margin = DPI // 20
    image.crop((left - margin, top - margin, right + margin, bottom + margin)).save(png, optimize=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    for path in render():
        print(f"wrote {path.relative_to(REPO)} ({Image.open(path).size[0]}×{Image.open(path).size[1]} px)")
