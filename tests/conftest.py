"""Shared fixtures: real data (digits, the CIFAR-10 JPEG copy) and real models (committed and shared)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HARNESS_SHARED", REPO.parent / "shared"))
DIGITS_ROBUST = REPO / "checkpoints" / "digits-fgsm-rs.pt"
DIGITS_STANDARD = REPO / "checkpoints" / "digits-standard.pt"

MAX_WORKERS = 4   # pytest-xdist workers: each loads torch and the shared models (about 1 GiB apiece)
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
# the cores shared out among the workers: more threads than cores makes torch's small kernels spin, not run
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // WORKERS)))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per core, at most MAX_WORKERS."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def _without_shared(path: Path) -> None:
    """A test that needs ../shared skips, saying why, where it is missing; CI (HARNESS_REQUIRE_SHARED=1) fails."""
    reason = (f"{path} is missing: this test needs the project's shared data and models. Put the shared folder "
              f"beside the repository, or set HARNESS_SHARED to it.")
    if os.environ.get("HARNESS_REQUIRE_SHARED") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def shared_file(relative: str) -> Path:
    """A file from ../shared (see _without_shared where it is missing)."""
    path = SHARED / relative
    if not path.exists():
        _without_shared(path)
    return path


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("shared") is not None and not SHARED.is_dir():
        _without_shared(SHARED)


@pytest.fixture(scope="session")
def registry():
    from harness.api.registry import Registry

    return Registry()


@pytest.fixture(scope="session")
def digits():
    from harness_plugins.datasets.digits import Digits

    return Digits().load(200)


def _digits_model(path: Path):
    from harness_plugins.models.checkpoint import Checkpoint

    return Checkpoint(arch="small-cnn", path=str(path), dataset="digits", in_channels=1).load(torch.device("cpu")).module


@pytest.fixture(scope="session")
def digits_robust():
    return _digits_model(DIGITS_ROBUST)


@pytest.fixture(scope="session")
def digits_standard():
    return _digits_model(DIGITS_STANDARD)


@pytest.fixture(scope="session")
def cifar():
    from harness_plugins.datasets.cifar10_jpeg import Cifar10Jpeg

    return Cifar10Jpeg(root=str(shared_file("data/cifar10-jpeg/test.npz").parent)).load(20)


def _cifar_model(name: str):
    from harness_plugins.models.checkpoint import Checkpoint

    path = shared_file(f"models/cifar10-jpeg/{name}.pt")
    return Checkpoint(arch="robustbench:cifar10:Linf:Wong2020Fast", path=str(path)).load(torch.device("cpu")).module


@pytest.fixture(scope="session")
def cifar_robust():
    return _cifar_model("fastat40")


@pytest.fixture(scope="session")
def cifar_standard():
    return _cifar_model("standard")


def none_and_hedge(steps: int = 3) -> str:
    """[[defenses]] tables: no defense, and a small Hedge for the digits models (ε_d = ε = 0.1)."""
    return f"""
[[defenses]]
plugin = "none"
[[defenses]]
plugin = "hedge"
eps_d = 0.1
steps = {steps}
step_size = 0.025
"""


# A small grid of one gradient attack and one query attack, used where a test needs a little of each.
PGD_AND_SQUARE = """
[[attacks]]
plugin = "pgd"
steps = 5
step_size = 0.025
[[attacks]]
plugin = "square"
n_queries = 50
"""


def digits_grid(tmp_path: Path, *, attacks: str = "", defenses: str = "", extra: str = "", n: int = 60,
                batch_size: int = 20, repeats: int = 1, models: str | None = None) -> Path:
    """Write a small digits grid file; returns its path."""
    models = models if models is not None else f"""
[[models]]
plugin = "checkpoint"
label = "robust"
arch = "small-cnn"
path = "{DIGITS_ROBUST}"
dataset = "digits"
in_channels = 1
"""
    text = f"""dataset = "digits"
n_examples = {n}
norm = "Linf"
eps = 0.1
repeats = {repeats}
seed = 7
batch_size = {batch_size}
device = "cpu"
db = "{tmp_path / 'results.sqlite'}"
{extra}
{models}
{attacks}
{defenses}
"""
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def harness_cli(*args: str, env: dict | None = None, check: bool = True, cwd: Path = REPO,
                **kwargs) -> subprocess.CompletedProcess:
    """Run the installed ``harness`` entry point in a fresh process (in the repository unless ``cwd`` says)."""
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"harness {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def report_tool(name: str) -> str:
    """pdflatex or chromium; CI installs both and sets HARNESS_REQUIRE_TOOLS=1, so a missing one fails there
    instead of skipping."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("HARNESS_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{name} is not installed; .ci/run installs it through apt")
        pytest.skip(f"{name} is not installed (apt-get install {'chromium' if name == 'chromium' else 'texlive-latex-extra'})")
    return path
