"""Plugin discovery through the `harness` entry-point group, built-in and third party alike."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import REPO, digits_grid, harness_cli
from harness.api.errors import PluginError
from harness.api.hookspecs import hookimpl
from harness.api.registry import Registry
from harness.api.specs import Kind, PluginSpec, spec_from_dataclass


def test_builtins_come_through_entry_points_with_their_distribution(registry):
    for kind, name in [(Kind.ATTACK, "pgd"), (Kind.ATTACK, "cw"), (Kind.DEFENSE, "hedge"), (Kind.DEFENSE, "none"),
                       (Kind.DEFENSE, "random"), (Kind.MODEL, "checkpoint"), (Kind.DATASET, "digits"),
                       (Kind.DATASET, "cifar10-jpeg")]:
        spec = registry.get(kind, name)
        assert spec.distribution.startswith("robustness-harness "), spec.distribution
        assert spec.description
    # without entry points nothing is built in: the built-ins use no private path
    assert Registry(entry_points=False).ids(Kind.ATTACK) == []


def test_plugin_declares_typed_params_with_defaults(registry):
    hedge = registry.get(Kind.DEFENSE, "hedge")
    steps = hedge.param("steps")
    assert steps.type is int and steps.default == 20
    assert hedge.param("loss").type_name() == "'sum-ce' | 'kl-uniform'"


def test_cli_lists_plugins_with_fields_and_distribution():
    out = harness_cli("plugins").stdout
    assert "pgd  —  PGD on the cross-entropy loss" in out
    assert re.search(r"\[robustness-harness 0\.1\.0( \(editable\))?\]", out)
    assert "steps: int = 20 (a number >= 0)  # K, the number of ascent steps" in out
    assert "eps_d: float | None = None (a number in [0, 1])" in out


def test_unknown_plugin_suggests_close_names(registry):
    with pytest.raises(PluginError, match=r"unknown attack plugin 'pdg'; did you mean 'pgd'"):
        registry.get(Kind.ATTACK, "pdg")


@pytest.fixture(scope="module")
def third_party_site(tmp_path_factory) -> Path:
    """pip-install the example package into its own folder, put on PYTHONPATH by the tests."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO / "examples" / "third_party_attack")], check=True,
                   capture_output=True)
    return target


def test_third_party_package_is_listed_and_usable_in_a_grid(third_party_site, tmp_path):
    env = {"PYTHONPATH": f"{third_party_site}:{REPO}"}
    listing = harness_cli("plugins", "--kind", "attack", env=env).stdout
    assert "fgsm-example" in listing
    assert "[harness-third-party-attack 0.1.0]" in listing
    grid = digits_grid(tmp_path, n=40, attacks='[[attacks]]\nplugin = "fgsm-example"\n')
    out = harness_cli("run", "--grid", str(grid), "--quiet", env={**env, "COLUMNS": "250"}).stdout
    header = next(line for line in out.splitlines() if "Nat-Acc." in line)
    assert "FGSM" in header.split()   # the table names it as its plugin declares
    import sqlite_utils

    db = sqlite_utils.Database(tmp_path / "results.sqlite")
    assert db["results"].count_where("attack = 'fgsm-example'") == 40


def test_a_third_party_defense_runs_in_a_grid_and_the_report_names_its_distribution_and_parameters(
        third_party_site, tmp_path):
    env = {"PYTHONPATH": f"{third_party_site}:{REPO}"}
    assert "[harness-third-party-attack 0.1.0]" in harness_cli("plugins", "--kind", "defense", env=env).stdout
    grid = digits_grid(tmp_path, n=40, attacks='[[attacks]]\nplugin = "fgsm-example"\nscale = 0.5\n',
                       defenses='[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "median-example"\n')
    harness_cli("run", "--grid", str(grid), "--quiet", env=env)
    harness_cli("report", "--db", str(tmp_path / "results.sqlite"), "--out", str(tmp_path / "r"), "--format",
                "markdown", env=env)
    rows = [line for line in (tmp_path / "r" / "report.md").read_text().split("## Plugins", 1)[1].splitlines()
            if "third-party" in line]
    assert any(r.startswith("| defense | Median \\[median-example\\] | median-example | harness-third-party-attack "
                            "0.1.0 (source ") and r.endswith("| size = 3 |") for r in rows), rows
    assert any(r.startswith("| attack | FGSM \\[fgsm-example\\]") and "scale = 0.5" in r for r in rows), rows


def test_the_example_median_filter_removes_a_lone_spike_and_refuses_an_even_window(third_party_site, monkeypatch):
    monkeypatch.syspath_prepend(str(third_party_site))
    from third_party_attack import MedianFilter

    x = torch.full((2, 3, 8, 8), 0.25)
    x[0, 1, 4, 4] = 1.0                       # one bright pixel: the 3 × 3 median is the flat value around it
    x[1, :, :, 4:] = 0.75                     # an edge: kept where it is
    out = MedianFilter().purify(nn.Identity(), x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out[0], torch.full_like(out[0], 0.25))
    assert torch.equal(out[1], x[1])
    with pytest.raises(PluginError, match="odd window.*got size = 4"):
        MedianFilter(size=4).check()


def test_a_class_statement_registers_a_plugin_whose_kind_is_its_base(tmp_path, monkeypatch):
    """One line of registration, found through the module's entry point; a subclass without a name is not a plugin."""
    (tmp_path / "one_line_plugins.py").write_text(
        "from dataclasses import dataclass\n"
        "from harness.api import Attack, Defense, Passes, param\n"
        "@dataclass(frozen=True)\n"
        "class Nudge(Attack, name='nudge'):\n"
        "    \"\"\"Moves every pixel by eps.\"\"\"\n"
        "    scale: float = param(1.0, 'how far, in eps')\n"
        "    def __call__(self, model, x, y, threat, *, generator):\n"
        "        return threat.project(x + self.scale * threat.eps, x)\n"
        "    def passes(self, threat):\n"
        "        return Passes(0, 0)\n"
        "@dataclass(frozen=True)\n"
        "class NudgeTwice(Nudge):\n"
        "    scale: float = param(2.0, 'how far, in eps')\n"
        "@dataclass(frozen=True)\n"
        "class Flip(Defense, name='flip'):\n"
        "    \"\"\"Mirrors the image.\"\"\"\n"
        "    def purify(self, model, x, *, generator, differentiable=False):\n"
        "        return x.flip(-1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import one_line_plugins

    registry = Registry(extra_modules=(one_line_plugins,))
    assert registry.get(Kind.ATTACK, "nudge").factory is one_line_plugins.Nudge
    assert registry.get(Kind.ATTACK, "nudge").param("scale").default == 1.0
    assert registry.get(Kind.DEFENSE, "flip").factory is one_line_plugins.Flip
    assert "flip" not in registry.ids(Kind.ATTACK) and one_line_plugins.NudgeTwice not in {
        spec.factory for spec in registry.all()}
    assert registry.get(Kind.ATTACK, "pgd").distribution.startswith("robustness-harness")   # the built-ins, alike


def test_a_plugin_name_that_a_grid_cannot_write_is_refused_where_the_class_is_defined():
    from harness.api import Attack

    with pytest.raises(PluginError, match=r"a plugin's name is one word .* got 'mi fgsm'"):
        type("Spaced", (Attack,), {}, name="mi fgsm")


def test_the_hooks_that_returned_specs_still_work_and_say_they_are_deprecated():
    from harness_plugins.attacks.pgd import PGD

    module = types.ModuleType("old_style")

    @dataclass(frozen=True)
    class OldPGD(PGD):
        """PGD, registered the old way."""

    @hookimpl
    def harness_attacks() -> list[PluginSpec]:
        return [spec_from_dataclass(OldPGD, name="old-pgd", kind=Kind.ATTACK)]

    module.harness_attacks = harness_attacks
    with pytest.warns(DeprecationWarning, match=r"harness_attacks\(\) is deprecated.*name=\"my-attack\""):
        registry = Registry(extra_modules=(module,))
    assert registry.get(Kind.ATTACK, "old-pgd").factory is OldPGD


def test_the_example_package_the_built_ins_and_the_readme_import_only_the_public_api():
    """harness.api is every plugin's one import, the built-ins' too (the core can then move behind it)."""
    sources = [p.read_text() for folder in ("examples", "plugins") for p in (REPO / folder).rglob("*.py")
               if "build" not in p.parts]
    readme = (REPO / "README.md").read_text().split("### Writing a plugin", 1)[1].split("\n## ", 1)[0]
    imported = set(re.findall(r"^\s*from (harness(?:\.[\w.]+)?) import", "\n".join(sources + [readme]), re.M))
    assert imported == {"harness.api"}
    assert (REPO / "harness" / "py.typed").exists()


def test_two_plugins_with_one_name_is_an_error_naming_both_distributions(tmp_path):
    # a second installed distribution that also claims the attack name "pgd"
    dist = tmp_path / "dupe_attack-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dupe-attack\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[harness]\ndupe = dupe_attack\n")
    (tmp_path / "dupe_attack.py").write_text(
        "from dataclasses import dataclass\n"
        "from harness_plugins.attacks.pgd import PGD\n"
        "@dataclass(frozen=True)\n"
        "class AnotherPGD(PGD, name='pgd'):\n"
        "    \"\"\"Another pgd.\"\"\"\n")
    proc = harness_cli("plugins", env={"PYTHONPATH": f"{tmp_path}:{REPO}"}, check=False)
    assert proc.returncode == 2
    assert "two attack plugins are named 'pgd'" in proc.stderr
    assert "robustness-harness 0.1.0" in proc.stderr and "dupe-attack 0.3" in proc.stderr


def test_plugin_registered_in_code_duplicates_are_caught_too():
    module = code_module("twin", """
        from dataclasses import dataclass
        from harness_plugins.attacks.pgd import PGD

        @dataclass(frozen=True)
        class Twin(PGD, name="pgd"):
            \"\"\"PGD again.\"\"\"
        """)
    with pytest.raises(PluginError, match="two attack plugins are named 'pgd'"):
        Registry(extra_modules=(module,))


def code_module(name: str, source: str) -> types.ModuleType:
    """A plugin module registered in code: ``source`` run as module ``name``, whose named classes are its plugins."""
    module = types.ModuleType(name)
    sys.modules[name] = module   # dataclasses look their module up while it runs
    exec(textwrap.dedent(source), module.__dict__)   # noqa: S102 - the test's own source
    return module


def _with_as_is() -> Registry:
    return Registry(extra_modules=(code_module("third_party_reference", """
        from dataclasses import dataclass
        from typing import ClassVar
        from harness.api import Defense
        from harness.api.interfaces import Role

        @dataclass(frozen=True)
        class AsIs(Defense, name="as-is"):
            \"\"\"A third party's own "no defense", declared as the reference that other defenses are compared with.\"\"\"

            display_name: ClassVar[str] = "As is"
            role: ClassVar[Role] = Role.REFERENCE

            def purify(self, model, x, *, generator, differentiable=False):
                return x
        """),))


@pytest.mark.parametrize("reference", ["none", "as-is"])
def test_a_third_party_reference_defense_is_treated_as_none_is(tmp_path, reference):
    from harness.analysis.analytics import flip_counts
    from harness.grid.reader import load_grid
    from harness.run.runner import run_grid
    from harness.storage.store import Store
    from harness_reports.content import build_content

    registry = _with_as_is()
    defenses = f'[[defenses]]\nplugin = "{reference}"\n[[defenses]]\nplugin = "hedge"\neps_d = 0.1\nsteps = 3\nstep_size = 0.05\n'
    grid = load_grid(digits_grid(tmp_path, n=40, attacks='[[attacks]]\nplugin = "pgd"\nsteps = 5\nstep_size = 0.03\n',
                                 defenses=defenses), registry)
    store = Store(grid.db)
    run_grid(grid, store=store, progress=False)
    run = store.run()
    assert run.reference_defense == reference
    flips = flip_counts(store, run.run_id)
    assert set(flips.defense) == {"hedge"} and len(flips) == 2          # hedge against the reference, clean and pgd
    content = build_content(Store(grid.db, readonly=True))
    assert [row.defense for row in content.main.groups[0].rows] == [{"none": "−", "as-is": "As is"}[reference], "Hedge"]
    assert {f.defense for f in content.flips} == {"Hedge"}
    transfer_only = [w.text for w in content.warnings if w.id == "transfer-only"]
    assert transfer_only and all("worst case of Hedge [hedge] is the transfer protocol only" in w for w in transfer_only)
    assert not any(reference in w for w in transfer_only)  # not a test-time defense


def test_a_grid_without_defenses_needs_exactly_one_reference(tmp_path):
    from harness.api.errors import ConfigError
    from harness.grid.reader import load_grid

    with pytest.raises(ConfigError, match=r"key 'defenses': the grid needs exactly one installed defense plugin with "
                                          r"role 'reference' to use by default; found 'as-is' .*, 'none' .*"
                                          r"Allowed: list the one to use under \[\[defenses\]\]"):
        load_grid(digits_grid(tmp_path, n=10), _with_as_is())


@pytest.mark.parametrize("presets,message", [
    ({"paper": {"stepsize": 0.007}}, r"its 'paper' preset sets stepsize, which it has no parameter of; its parameters "
                                     r"are .*step_size"),
    ({"papr": {"step_size": 0.007}}, r"declares a preset 'papr'; the presets are honest, paper"),
])
def test_a_typo_in_a_plugins_preset_is_an_error_not_a_preset_silently_ignored(tmp_path, presets, message):
    from harness.grid.reader import load_grid

    module = code_module("typo_preset", f"""
        from dataclasses import dataclass
        from harness.api import Attack, Passes, param

        @dataclass(frozen=True)
        class Stepped(Attack, name="stepped"):
            \"\"\"Does nothing, in steps.\"\"\"
            presets = {presets!r}
            step_size: float = param(0.01, "step")

            def __call__(self, model, x, y, threat, *, generator):
                return x

            def passes(self, threat):
                return Passes(0, 0)
        """)
    registry = Registry(extra_modules=(module,))
    grid = digits_grid(tmp_path, attacks='[[attacks]]\nplugin = "stepped"\n')
    with pytest.raises(PluginError, match=r"attack plugin 'stepped' from \(registered in code: typo_preset\)" + ".*"
                       + message):
        load_grid(grid, registry)


def test_a_plugin_declares_which_parameter_names_its_entries_and_which_takes_undeclared_keys(tmp_path, monkeypatch):
    """The core knows no parameter by name: a bridge says which of its own parameters labels an entry and which
    collects the keys it cannot list."""
    (tmp_path / "bridge_plugins.py").write_text(
        "from dataclasses import dataclass\n"
        "from typing import ClassVar\n"
        "from harness.api import Attack, Passes, param\n"
        "@dataclass(frozen=True, kw_only=True)\n"
        "class Bridge(Attack, name='bridge'):\n"
        "    label_param: ClassVar[str] = 'klass'\n"
        "    open_param: ClassVar[str] = 'options'\n"
        "    klass: str = param(help='the class to bridge to')\n"
        "    options: dict = param(None, 'its arguments')\n"
        "    def __call__(self, model, x, y, threat, *, generator):\n"
        "        return x\n"
        "    def passes(self, threat):\n"
        "        return Passes(1, 0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import bridge_plugins

    from harness.grid.reader import load_grid

    registry = Registry(extra_modules=(bridge_plugins,))
    grid = load_grid(digits_grid(tmp_path, attacks='[[attacks]]\nplugin = "bridge"\nklass = "MIFGSM"\nsteps = 7\n'
                                 'decay = 0.5\n'), registry)
    entry = grid.attacks[-1]
    assert entry.label == "MIFGSM" and dict(entry.params) == {"klass": "MIFGSM",
                                                              "options": {"steps": 7, "decay": 0.5}}


def test_the_old_names_of_a_plugins_id_still_answer_and_warn(registry):
    spec = registry.get(Kind.ATTACK, "pgd")
    with pytest.warns(DeprecationWarning, match="PluginSpec.name is now PluginSpec.id"):
        assert spec.name == spec.id == "pgd"
    with pytest.warns(DeprecationWarning, match="Registry.names is now Registry.ids"):
        assert registry.names(Kind.DEFENSE) == registry.ids(Kind.DEFENSE) and "hedge" in registry.ids(Kind.DEFENSE)
