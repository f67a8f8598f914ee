"""Every command block of the README marked ``<!-- runnable -->`` runs as written (``<!-- runnable: slow -->``
under the slow marker), in a folder laid out as a checkout is after the README's main job."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

MARK = re.compile(r"^<!-- runnable(?:: (\w+))? -->\n```bash\n(.*?)^```", re.M | re.S)


def runnable_blocks(speed: str | None) -> list[list[str]]:
    """The commands of each marked block (comments stripped), ``speed`` None for the default ones."""
    blocks = []
    for marked, body in MARK.findall((REPO / "README.md").read_text()):
        if (marked or None) == speed:
            lines = [line.split("  #")[0].strip() for line in body.splitlines()]
            blocks.append([line for line in lines if line and not line.startswith("#")])
    return blocks


def checkout_after_the_main_job(tmp_path: Path) -> Path:
    """The checkout's files a command reads, beside ../shared as in a clone; the main job's database is its
    committed record (the same grid, run by the README's first command)."""
    work = tmp_path / "checkout"
    work.mkdir()
    for name in ("configs", "checkpoints", "pyproject.toml"):
        (work / name).symlink_to(REPO / name)
    (work / "results").mkdir()
    shutil.copy(REPO / "results" / "record" / "quickstart.sqlite", work / "results" / "quickstart.sqlite")
    (tmp_path / "shared").symlink_to((REPO / ".." / "shared").resolve())
    return work


def run_block(commands: list[str], cwd: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    for command in commands:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                              text=True)
        assert proc.returncode == 0, f"README command failed ({proc.returncode}): {command}\n{proc.stdout}\n{proc.stderr}"


def test_the_readme_marks_its_runnable_blocks():
    assert runnable_blocks(None) and runnable_blocks("slow")
    assert any("--grid configs/table5.toml" in c for block in runnable_blocks("slow") for c in block)


@pytest.mark.shared
@pytest.mark.parametrize("block", range(len(runnable_blocks(None))))
def test_each_runnable_readme_block_runs_as_written(tmp_path, block):
    work = checkout_after_the_main_job(tmp_path)
    run_block(runnable_blocks(None)[block], work)
    if any(c.startswith("harness report") for c in runnable_blocks(None)[block]):
        assert (work / "results" / "quickstart-report" / "report.html").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("block", range(len(runnable_blocks("slow"))))
def test_each_slow_runnable_readme_block_runs_as_written(tmp_path, block):
    work = checkout_after_the_main_job(tmp_path)
    run_block(runnable_blocks("slow")[block], work)
    if any("table5" in c for c in runnable_blocks("slow")[block]):
        out = subprocess.run([sys.executable, "-m", "harness.cli", "show", "--db", "results/table5.sqlite",
                              "--format", "csv"], cwd=work, capture_output=True, text=True, check=True).stdout
        assert "Wong2020Fast" in out and "Hedge" in out


def test_the_readme_pictures_are_what_the_record_database_renders_now(tmp_path):
    """scripts/readme_images.py on the committed record gives the committed pictures: same size, same pixels
    within antialiasing (a changed table, figure or record shows up here, and the script says how to renew)."""
    import numpy as np
    from PIL import Image

    from conftest import report_tool
    report_tool("pdflatex")
    sys.path.insert(0, str(REPO / "scripts"))
    from readme_images import render

    readme = (REPO / "README.md").read_text()
    for fresh in render(tmp_path):
        committed = REPO / "docs" / "images" / fresh.name
        assert f"docs/images/{fresh.name}" in readme
        old, new = (np.asarray(Image.open(p).convert("L"), dtype=float) for p in (committed, fresh))
        assert old.shape == new.shape, f"{fresh.name}: rerun python scripts/readme_images.py"
        assert np.abs(old - new).mean() < 2.0, f"{fresh.name}: rerun python scripts/readme_images.py"
