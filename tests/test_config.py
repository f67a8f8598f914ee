"""Grid validation: every error names the file, the key and what is allowed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import DIGITS_ROBUST, digits_grid, harness_cli
from harness.api.errors import ConfigError
from harness.grid.reader import load_grid
from harness.run.runner import Runner

GOOD = f"""dataset = "digits"
n_examples = 10
norm = "Linf"
eps = "8/255"
db = "x.sqlite"
device = "cpu"
[[models]]
plugin = "checkpoint"
arch = "small-cnn"
path = "{DIGITS_ROBUST}"
dataset = "digits"
in_channels = 1
[[attacks]]
plugin = "pgd"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def test_good_grid_parses(tmp_path, registry):
    grid = load_grid(write(tmp_path, GOOD), registry)
    assert grid.threat.eps == pytest.approx(8 / 255)
    assert [a.label for a in grid.attacks] == ["clean", "pgd"]   # clean accuracy is always evaluated
    assert [d.label for d in grid.defenses] == ["none"]


def test_an_attack_may_take_its_own_radius(tmp_path, registry):
    plain = load_grid(write(tmp_path, GOOD), registry)
    grid = load_grid(write(tmp_path, GOOD + 'eps = "4/255"\n'), registry)
    assert grid.attacks[1].eps == pytest.approx(4 / 255)
    assert grid.threat_for(grid.attacks[1]).eps == pytest.approx(4 / 255)
    assert grid.threat_for(grid.attacks[0]).eps == pytest.approx(8 / 255)  # clean keeps the grid's
    assert plain.attacks[1].eps is None and plain.threat_for(plain.attacks[1]).eps == pytest.approx(8 / 255)
    assert grid.run_id != plain.run_id


BAD = [
    # (what is wrong, how to break GOOD, expected key, expected message fragment)
    ("syntax", lambda t: t + "\nthis is not toml", "(syntax)", "not valid TOML"),
    ("unknown top-level key", lambda t: t.replace("n_examples", "n_exmples"), "n_exmples", "did you mean 'n_examples'"),
    ("missing dataset", lambda t: t.replace('dataset = "digits"\n', "", 1), "dataset", "missing. Allowed: cifar10, cifar10-jpeg, cifar100, digits, fashion-mnist, imagenet, mnist"),
    ("unknown dataset", lambda t: t.replace('dataset = "digits"', 'dataset = "digit"', 1), "dataset.plugin",
     "unknown dataset plugin 'digit'; did you mean 'digits'"),
    ("n_examples not positive", lambda t: t.replace("n_examples = 10", "n_examples = 0"), "n_examples",
     "expected an integer >= 1, got 0"),
    ("n_examples not an int", lambda t: t.replace("n_examples = 10", 'n_examples = "ten"'), "n_examples",
     "expected an integer >= 1, got 'ten'"),
    ("bad norm", lambda t: t.replace('norm = "Linf"', 'norm = "linf"'), "norm",
     "'linf' is not a norm; did you mean 'Linf'? Allowed: Linf, L2"),
    ("eps not a number", lambda t: t.replace('eps = "8/255"', 'eps = "8 over 255"'), "eps",
     "expected a number, got '8 over 255'. Allowed: a number"),
    ("eps negative", lambda t: t.replace('eps = "8/255"', "eps = -0.1"), "eps", "must be >= 0"),
    ("eps missing", lambda t: t.replace('eps = "8/255"\n', ""), "eps", "missing; the radius of the threat model"),
    ("bad device", lambda t: t.replace('device = "cpu"', 'device = "gpu"'), "device", "'gpu' is not a device. Allowed: cpu, cuda, auto"),
    ("unknown attack", lambda t: t.replace('plugin = "pgd"', 'plugin = "pgdd"'), "attacks[0].plugin",
     "unknown attack plugin 'pgdd'; did you mean 'pgd'"),
    ("unknown attack param", lambda t: t + "stepz = 3\n", "attacks[0].stepz",
     "plugin 'pgd' has no parameter 'stepz'; did you mean 'steps', 'step_size'? Allowed: target, steps, step_size"),
    ("wrong param type", lambda t: t + 'steps = "many"\n', "attacks[0].steps", "expected an integer, got 'many'"),
    ("bad literal param", lambda t: t + 'loss = "cee"\n', "attacks[0].loss",
     "'cee' is not allowed; did you mean 'ce'? Allowed: 'ce', 'cw'"),
    ("unknown preset", lambda t: 'preset = "papper"\n' + t, "preset",
     "'papper' is not a preset; did you mean 'paper'? Allowed: honest, paper"),
    ("bool param given a string", lambda t: t + 'random_start = "yes"\n', "attacks[0].random_start",
     "expected true or false, got 'yes'"),
    ("entry without plugin", lambda t: t + '[[defenses]]\neps_d = 0.1\n', "defenses[0].plugin", "missing; every entry names its plugin"),
    ("required param missing", lambda t: t.replace('arch = "small-cnn"\n', ""), "models[0].arch",
     "plugin 'checkpoint' needs this parameter"),
    ("duplicate labels", lambda t: t + '[[attacks]]\nplugin = "pgd"\n', "attacks[1].label", "two attacks share the label 'pgd'"),
    ("models missing", lambda t: t.split("[[models]]")[0] + '[[attacks]]\nplugin = "pgd"\n', "models",
     "missing; list at least one model. Allowed: [[models]] tables naming one of: autoattack-example, checkpoint, robustbench"),
    ("models empty", lambda t: "models = []\n" + t.split("[[models]]")[0], "models",
     "expected a non-empty list of model tables, got []"),
    ("repeats zero", lambda t: "repeats = 0\n" + t, "repeats", "expected an integer >= 1 and at most 1,000, got 0"),
    ("batch size negative", lambda t: "batch_size = -4\n" + t, "batch_size", "expected an integer >= 1 or \"auto\", got -4"),
    ("attack eps negative", lambda t: t + "eps = -0.01\n", "attacks[0].eps", "must be >= 0, got -0.01"),
    ("attack eps not a number", lambda t: t + 'eps = "half"\n', "attacks[0].eps", "expected a number, got 'half'"),
]


@pytest.mark.parametrize("what,break_it,key,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_named(tmp_path, registry, what, break_it, key, fragment):
    path = write(tmp_path, break_it(GOOD))
    with pytest.raises(ConfigError) as info:
        load_grid(path, registry)
    message = str(info.value)
    assert message.startswith(f"{path}: key '{key}': "), message
    assert fragment in message, message


def test_missing_file(tmp_path, registry):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'nope.toml'}: key '(file)': file not found")):
        load_grid(tmp_path / "nope.toml", registry)


def test_cuda_asked_for_without_gpu(tmp_path, registry):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="key 'device': 'cuda' was asked for but torch sees no GPU here. Allowed: cpu, auto"):
        load_grid(write(tmp_path, GOOD.replace('device = "cpu"', 'device = "cuda"')), registry)


def test_model_of_other_dataset_is_rejected_before_any_work(tmp_path, registry):
    models = f"""
[[models]]
plugin = "checkpoint"
label = "wrong-domain"
arch = "small-cnn"
path = "{DIGITS_ROBUST}"
dataset = "mnist"
in_channels = 1
"""
    grid = load_grid(digits_grid(tmp_path, models=models, attacks='[[attacks]]\nplugin = "pgd"\n'), registry)
    with pytest.raises(ConfigError, match=r"key 'models\[0\]': model 'wrong-domain' was trained on 'mnist' data, "
                                          r"but the grid's dataset 'digits' is 'digits' data"):
        Runner(grid, progress=False).run()
    assert not (tmp_path / "results.sqlite").exists() or _no_results(tmp_path)


def test_model_with_wrong_class_count_is_rejected(tmp_path, registry):
    models = f"""
[[models]]
plugin = "checkpoint"
label = "k5"
arch = "small-cnn"
path = "{DIGITS_ROBUST}"
dataset = "digits"
in_channels = 1
num_classes = 5
"""
    grid = load_grid(digits_grid(tmp_path, models=models), registry)
    from harness.api.errors import DataError

    # the weights themselves say 10 classes: the checkpoint loader reports the shape mismatch
    with pytest.raises(DataError, match=r"shape mismatch \(file vs model\): net.fc2.weight \(10, 128\) vs \(5, 128\)"):
        Runner(grid, progress=False).run()


def _no_results(tmp_path: Path) -> bool:
    import sqlite_utils

    db = sqlite_utils.Database(tmp_path / "results.sqlite")
    return "results" not in db.table_names() or db["results"].count == 0


def test_cli_prints_config_errors_without_traceback(tmp_path):
    path = write(tmp_path, GOOD.replace('norm = "Linf"', 'norm = "L3"'))
    proc = harness_cli("run", "--grid", str(path), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [   # the run's first line, then the one error line
        f"harness run: loading the plugins and {path}",
        f"harness: error: {path}: key 'norm': 'L3' is not a norm; did you mean 'L2'? Allowed: Linf, L2"]


def test_config_values_are_never_executed(tmp_path, registry):
    path = write(tmp_path, GOOD.replace('eps = "8/255"', 'eps = "__import__(\'os\').getcwd()"'))
    with pytest.raises(ConfigError, match="expected a number"):
        load_grid(path, registry)
