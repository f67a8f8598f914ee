"""scripts/gpu_check.sh, checked on the CPU: its stages fit 9 minutes, and it fails loudly without CUDA."""

from __future__ import annotations

import os
import re
import subprocess

from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"


def test_the_stage_budgets_add_up_to_at_most_540_seconds():
    budgets = [int(s) for s in re.findall(r"^stage \S+ (\d+) ", SCRIPT.read_text(), flags=re.M)]
    assert len(budgets) >= 3 and sum(budgets) <= 540, budgets


def test_without_cuda_it_fails_at_once_and_runs_nothing(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "sees no CUDA device" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FAILED.txt"]
