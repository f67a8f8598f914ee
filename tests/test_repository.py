"""The repository's own rules: the core knows no plugin by name, the installed names cannot clash, and the
repository speaks of the project only."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

CORE = ("harness", "reports")
PROSE = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
CODE = [p for folder in ("harness", "plugins", "reports", "benchmarks", "scripts", "configs", "tests", "examples")
        for p in sorted((REPO / folder).rglob("*")) if p.suffix in (".py", ".toml", ".sh", ".j2", ".md")]
# How the project was built is not what it is: such notes belong outside the repository.
BUILD_HISTORY = [re.compile(p, re.I) for p in (r"\bsessions?\b", r"\bissues?\s*#?\d", r"\bthe issue\b", r"\bissue's\b",
                                               r"\blent\b")]


# String literals that equal a plugin's name by coincidence, not to name that plugin: (file, literal) → why.
COINCIDENCES = {
    ("harness/api/losses.py", "none"): "torch's reduction argument",
    ("harness/api/compat.py", "autoattack"): "the module name robustbench imports",
    ("harness/api/compat.py", "square"): "a pyautoattack submodule",
    ("harness/api/compat.py", "robustbench"): "the library's module name",
    ("harness/run/provenance.py", "torchattacks"): "a distribution whose version is recorded",
    ("harness/run/provenance.py", "robustbench"): "a distribution whose version is recorded",
    ("harness/storage/records.py", "adaptive"): "the recorded field saying an attack goes through the defense",
    ("reports/warnings.py", "adaptive"): "the recorded field saying an attack goes through the defense",
    ("reports/render.py", "adaptive"): "the file name adaptive.tex",
}


def _string_constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
            and isinstance(node.value, str)}


def test_ci_runs_the_readmes_two_commands_as_written_in_a_new_virtual_environment():
    readme = (REPO / "README.md").read_text()
    quick_start = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick_start.strip().splitlines()]
    ci = (REPO / ".ci" / "run").read_text()
    assert len(commands) == 2 and all(command in ci.splitlines() for command in commands), commands
    assert "python3 -m venv" in ci and "--system-site-packages" not in ci


def test_the_readmes_layout_table_matches_the_tree_of_the_core():
    """A row per folder of the core, naming every module in it and no module that is not there."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("### Layout", 1)[1].split("\n\n", 2)[1]
    folders = ["reports", *sorted(str(p.parent.relative_to(REPO)) for p in (REPO / "harness").rglob("__init__.py"))]
    rows = {line.split("`")[1].rstrip("/"): line for line in table.splitlines() if line.startswith("| `")}
    assert {f for f in rows if f.startswith("harness")} == {f for f in folders if f.startswith("harness")}
    for folder in folders:
        named = set(re.findall(r"`(\w+)`", rows[folder].split("|")[2]))
        modules = {p.stem for p in (REPO / folder).glob("*.py") if p.stem not in ("__init__", "__main__")}
        assert modules <= named, f"{folder}/: the README's layout table leaves out {sorted(modules - named)}"
        if folder != "reports":
            stale = {n for n in named if n.islower()} - modules - {"__init__"}   # a module that is not there
            assert not stale, f"{folder}/: the README's layout table names {sorted(stale)}, not in the folder"


def test_the_core_imports_no_plugin_module():
    offenders = []
    for folder in CORE:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in ("plugins", "harness_plugins")]
    assert offenders == []


def test_no_plugin_name_is_a_string_literal_in_the_core(registry):
    names = {spec.id for spec in registry.all()}
    offenders = []
    for folder in CORE:
        for path in (REPO / folder).rglob("*.py"):
            relative = str(path.relative_to(REPO))
            offenders += [f"{relative}: {s!r}" for s in _string_constants(path) & names if (relative, s) not in COINCIDENCES]
        for path in (REPO / folder).rglob("*.j2"):
            text = path.read_text()
            offenders += [f"{path.relative_to(REPO)}: {n!r}" for n in names if re.search(rf"[\"']{re.escape(n)}[\"']", text)]
    assert offenders == [], "the core must read roles and names from what plugins declare, not know them by name"


def test_the_repository_speaks_only_of_the_project():
    offenders = []
    for path in PROSE + CODE:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            line = line.replace('scope="session"', "")  # pytest's fixture scope, not a note
            if any(p.search(line) for p in BUILD_HISTORY):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert offenders == []


@pytest.mark.parametrize("parts", [("see ses", "sion 3 notes"), ("as iss", "ue 12 asks"), ("the iss", "ue's target"),
                                   ("a le", "nt GPU")])
def test_the_history_check_can_fail(parts):
    assert any(p.search("".join(parts)) for p in BUILD_HISTORY)  # split here so this file passes its own check


def test_installed_names_do_not_clash_with_a_top_level_reports_package(tmp_path):
    """The project installed (not editable) beside a package whose top-level modules are called ``reports`` and
    ``plugins`` (PyPI has such packages): both import, and ``harness plugins`` lists the built-ins from the installed
    copy. Self-sufficient: pip builds both in isolated build environments (setuptools from the index), installs them
    into a folder of their own, and this interpreter, which has the dependencies, imports from that folder first."""
    other = tmp_path / "other"
    (other / "reports").mkdir(parents=True)
    (other / "reports" / "__init__.py").write_text("WHO = 'the other reports package'\n")
    (other / "plugins").mkdir()
    (other / "plugins" / "__init__.py").write_text("WHO = 'the other plugins package'\n")
    (other / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = '
                                          '"setuptools.build_meta"\n[project]\nname = "other-reports"\nversion = "1.0"\n'
                                          '[tool.setuptools]\npackages = ["reports", "plugins"]\n')
    source = tmp_path / "source"   # a copy: building in the checkout would leave build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("harness", "plugins", "reports"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                           str(source), str(other)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    check = subprocess.run([sys.executable, "-c", "import reports, plugins, harness_reports.render, "
                            "harness_plugins.attacks, harness; print(reports.WHO, '|', plugins.WHO, '|', harness.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert check.returncode == 0, check.stderr
    assert "the other reports package | the other plugins package" in check.stdout
    assert check.stdout.strip().endswith(f"{site}/harness/__init__.py")      # the installed copy, not the checkout
    listing = subprocess.run([sys.executable, "-m", "harness.cli", "plugins", "--kind", "defense"],
                             capture_output=True, text=True, cwd=tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    assert "hedge  —  Hedge Defense" in listing.stdout and "[robustness-harness" in listing.stdout
