"""Every malformed input gets one clear line: exit code 2, the file, key or plugin named, no traceback, no rows.

Each case runs through the CLI's entry point (``harness.cli.main``) in this process, so that the torch
import is paid once; a few run as real subprocesses at the end.
"""

from __future__ import annotations

import gzip
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from conftest import DIGITS_ROBUST, REPO, shared_file
from harness.cli import main

GRID = f"""dataset = "digits"
n_examples = 20
norm = "Linf"
eps = 0.1
batch_size = 20
device = "cpu"
save_examples = 0

[[models]]
plugin = "checkpoint"
label = "robust"
arch = "small-cnn"
path = "{DIGITS_ROBUST}"
dataset = "digits"
in_channels = 1

[[attacks]]
plugin = "pgd"
steps = 2
"""


PROGRESS = r"harness run: loading the plugins and |run [0-9a-f]{12}: \d+ work units on "
REPORTED = '[reported]\nsource = "Wu et al., Table 5"\nmeasured_on = "CIFAR-10"\n'


class Case:
    """One bad input: how to make it from a working setup (the tmp folder), and what the one line must name."""

    def __init__(self, name: str, make: Callable[[Path], list[str]], *fragments: str):
        self.name, self.make, self.fragments = name, make, fragments


def grid(text: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / "grid.toml").write_text(text.replace("{tmp}", str(tmp)))
        return ["run", "--grid", str(tmp / "grid.toml"), "--db", str(tmp / "out.sqlite")]
    return make


def grid_with(old: str, new: str) -> Callable[[Path], list[str]]:
    assert old in GRID, old
    return grid(GRID.replace(old, new))


def extra(text: str) -> Callable[[Path], list[str]]:
    return grid(GRID + text)


def model(**params: object) -> Callable[[Path], list[str]]:
    """The digits model entry with some parameters replaced (a path given as {tmp}/… lands in the test folder)."""
    def make(tmp: Path) -> list[str]:
        entry = {"plugin": "checkpoint", "label": "robust", "arch": "small-cnn", "path": str(DIGITS_ROBUST),
                 "dataset": "digits", "in_channels": 1, **params}
        lines = "\n".join(f"{k} = {v!r}".replace("'", '"') if isinstance(v, str) else f"{k} = {str(v).lower()}"
                          for k, v in entry.items())
        return grid(GRID.split("[[models]]")[0] + "[[models]]\n" + lines + "\n[[attacks]]\nplugin = \"pgd\"\nsteps = 2\n")(tmp)
    return make


def file(name: str, content: bytes | Callable[[], bytes]) -> Callable[[Path], Path]:
    def write(tmp: Path) -> Path:
        (tmp / name).write_bytes(content() if callable(content) else content)
        return tmp / name
    return write


def checkpoint_file(content: bytes | Callable[[], bytes]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        path = file("weights.pt", content)(tmp)
        return model(path=str(path))(tmp)
    return make


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/harness-malformed-pwned",))


def payload_checkpoint() -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"weight": Payload()}, buffer)
    return buffer.getvalue()


def nan_checkpoint() -> bytes:
    import io

    state = torch.load(DIGITS_ROBUST, weights_only=True)
    state = {k: torch.full_like(v, float("nan")) if k.endswith("fc2.bias") else v for k, v in state.items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def altered_checkpoint(how: str) -> Callable[[], bytes]:
    """The digits model's weights with one tensor replaced: without data (meta), or as integers."""
    def make() -> bytes:
        import io

        state = torch.load(DIGITS_ROBUST, weights_only=True)
        key = next(k for k in state if k.endswith("fc2.weight"))
        state[key] = torch.empty(state[key].shape, device="meta") if how == "meta" else state[key].round().long()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()
    return make


def fifo(name: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        os.mkfifo(tmp / name)
        return tmp / name
    return make


def damaged(how: str) -> Callable[[Path], list[str]]:
    """A finished run's database, damaged in one way; then the same run again, which must not write into it."""
    def make(tmp: Path) -> list[str]:
        args = grid(GRID)(tmp)
        assert main(args + ["--quiet"]) == 0
        db = tmp / "out.sqlite"
        if how == "corrupt":   # the units table's root page overwritten: SQLite's own check fails
            conn = sqlite3.connect(db)
            size = conn.execute("PRAGMA page_size").fetchone()[0]
            root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'units'").fetchone()[0]
            conn.close()
            data = bytearray(db.read_bytes())
            data[(root - 1) * size + 8:root * size - 8] = os.urandom(size - 16)
            db.write_bytes(bytes(data))
            return args
        conn = sqlite3.connect(db)
        conn.execute({"table": "DROP TABLE shards", "column": "ALTER TABLE units DROP COLUMN done",
                      "json": "UPDATE runs SET plugins = 'not json {'"}[how])
        conn.commit()
        conn.close()
        return args
    return make


def db_file(content: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        args = grid(GRID)(tmp)
        content(tmp / "out.sqlite")
        return args
    return make


def foreign_results(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, note TEXT)")
    conn.execute("INSERT INTO results (note) VALUES ('someone else''s data')")
    conn.commit()
    conn.close()


def foreign_units(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE units (name TEXT)")
    conn.commit()
    conn.close()


def other_version(path: Path) -> None:
    from harness.storage.records import APPLICATION_ID

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (run_id TEXT)")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()


def cifar_jpeg(broken: str) -> Callable[[Path], list[str]]:
    """A cifar10-jpeg folder whose test.npz is broken in one way."""
    def make(tmp: Path) -> list[str]:
        folder = tmp / "cifar"
        folder.mkdir()
        if broken == "jpeg":
            source = np.load(shared_file("data/cifar10-jpeg/test.npz"))
            blobs = source["jpeg"].copy()
            offsets = source["offsets"]
            blobs[offsets[3]:offsets[4]] = 7  # image 3 is no longer a JPEG
            np.savez(folder / "test.npz", jpeg=blobs, offsets=offsets, labels=source["labels"], classes=source["classes"])
        else:
            (folder / "test.npz").write_bytes(b"PK\x03\x04 not a zip archive")
        return grid(f"""dataset = {{ plugin = "cifar10-jpeg", root = "{folder}" }}
n_examples = 10
eps = "8/255"
device = "cpu"
models = [{{ plugin = "autoattack-example" }}]
""")(tmp)
    return make


def idx_folder(broken: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        folder = tmp / "fmnist"
        folder.mkdir()
        labels = b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(range(10))
        images = b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big") \
            + bytes(10 * 28 * 28)
        if broken == "header":
            images = images[:9]       # the dimension sizes are cut off
        elif broken == "magic":
            images = b"\x12\x34" + images[2:]
        (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
        return grid(GRID.replace('dataset = "digits"', f'dataset = {{ plugin = "fashion-mnist", root = "{folder}" }}', 1)
                    .replace('dataset = "digits"', 'dataset = "fashion-mnist"'))(tmp)
    return make


def cli(*args: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        return [a.replace("{tmp}", str(tmp)) for a in args]
    return make


def with_run(*args: str) -> Callable[[Path], list[str]]:
    """A real finished run in {tmp}/out.sqlite first, then the command."""
    def make(tmp: Path) -> list[str]:
        (tmp / "grid.toml").write_text(GRID)
        assert main(["run", "--grid", str(tmp / "grid.toml"), "--db", str(tmp / "out.sqlite"), "--quiet"]) == 0
        return [a.replace("{tmp}", str(tmp)) for a in args]
    return make


CASES = [
    # the grid file itself
    Case("grid missing", cli("run", "--grid", "{tmp}/nope.toml"), "nope.toml", "file not found"),
    Case("grid is a directory", cli("run", "--grid", "{tmp}"), "is a directory"),
    Case("grid is binary", lambda t: (file("grid.toml", bytes(range(256)) * 4)(t), ["run", "--grid", str(t / "grid.toml")])[1],
         "grid.toml", "not a text file"),
    Case("TOML syntax", extra("this is = not = toml\n"), "(syntax)", "not valid TOML"),
    Case("unknown top-level key", grid_with("n_examples", "n_exmples"), "key 'n_exmples'", "did you mean"),
    Case("dataset missing", grid(GRID.replace('dataset = "digits"\n', "", 1)), "key 'dataset'"),
    Case("dataset unknown", grid_with('dataset = "digits"', 'dataset = "digit"'), "key 'dataset.plugin'", "did you mean 'digits'"),
    Case("dataset a number", grid_with('dataset = "digits"', "dataset = 3"), "key 'dataset'"),
    Case("n_examples zero", grid_with("n_examples = 20", "n_examples = 0"), "key 'n_examples'", ">= 1"),
    Case("n_examples text", grid_with("n_examples = 20", 'n_examples = "20"'), "key 'n_examples'"),
    Case("n_examples bool", grid_with("n_examples = 20", "n_examples = true"), "key 'n_examples'"),
    Case("n_examples beyond the data", grid_with("n_examples = 20", "n_examples = 5000"), "digits", "n_examples"),
    Case("norm unknown", grid_with('norm = "Linf"', 'norm = "L1"'), "key 'norm'", "Allowed: Linf, L2"),
    Case("eps missing", grid_with("eps = 0.1\n", ""), "key 'eps'"),
    Case("eps text", grid_with("eps = 0.1", 'eps = "tiny"'), "key 'eps'", "expected a number"),
    Case("eps negative", grid_with("eps = 0.1", "eps = -0.1"), "key 'eps'"),
    Case("eps NaN", grid_with("eps = 0.1", "eps = nan"), "key 'eps'", "finite"),
    Case("eps infinite", grid_with("eps = 0.1", "eps = inf"), "key 'eps'", "finite"),
    Case("eps above 1 under Linf", grid_with("eps = 0.1", "eps = 8"), "key 'eps'", "[0,1]"),
    Case("eps bool", grid_with("eps = 0.1", "eps = true"), "key 'eps'"),
    Case("device unknown", grid_with('device = "cpu"', 'device = "gpu"'), "key 'device'", "Allowed: cpu, cuda, auto"),
    Case("models missing", grid(GRID.split("[[models]]")[0]), "key 'models'"),
    Case("models empty", grid(GRID.split("[[models]]")[0] + "models = []\n"), "key 'models'"),
    Case("model entry a number", grid(GRID.split("[[models]]")[0] + "models = [3]\n"), "key 'models[0]'"),
    Case("model without plugin", grid(GRID.replace('plugin = "checkpoint"\n', "")), "key 'models[0].plugin'"),
    Case("model unknown plugin", grid_with('plugin = "checkpoint"', 'plugin = "chekpoint"'), "key 'models[0].plugin'",
         "did you mean 'checkpoint'"),
    Case("model required parameter missing", grid(GRID.replace(f'path = "{DIGITS_ROBUST}"\n', "")),
         "key 'models[0].path'"),
    Case("model unknown parameter", grid_with("in_channels = 1", "in_channels = 1\nchannels = 1"), "key 'models[0].channels'"),
    Case("model parameter type", grid_with("in_channels = 1", 'in_channels = "one"'), "key 'models[0].in_channels'"),
    Case("attack unknown plugin", grid_with('plugin = "pgd"', 'plugin = "pgdd"'), "key 'attacks[0].plugin'"),
    Case("attack unknown parameter", extra("stepz = 3\n"), "key 'attacks[0].stepz'"),
    Case("attack parameter type", grid_with("steps = 2", 'steps = "two"'), "key 'attacks[0].steps'"),
    Case("attack literal value", extra('loss = "mse"\n'), "key 'attacks[0].loss'", "Allowed: 'ce', 'cw'"),
    Case("attack bool given text", extra('random_start = "yes"\n'), "key 'attacks[0].random_start'"),
    Case("attack negative steps", grid_with("steps = 2", "steps = -3"), "key 'attacks[0].steps'", ">= 0"),
    Case("attack eps negative", extra("eps = -0.01\n"), "key 'attacks[0].eps'"),
    Case("attack eps text", extra('eps = "half"\n'), "key 'attacks[0].eps'"),
    Case("duplicate labels", extra('[[attacks]]\nplugin = "pgd"\n'), "key 'attacks[1].label'", "share the label"),
    Case("empty label", extra('label = ""\n'), "key 'attacks[0].label'"),
    Case("label with a newline", extra('label = "x\\n```\\n<img src=x onerror=alert(1)>"\n'), "key 'attacks[0].label'",
         "control character"),
    Case("label with a tab", grid_with('label = "robust"', 'label = "ro\\tbust"'), "key 'models[0].label'"),
    Case("defenses empty", grid("defenses = []\n" + GRID), "key 'defenses'"),
    Case("defense unknown", extra('[[defenses]]\nplugin = "hedgee"\n'), "key 'defenses[0].plugin'", "did you mean 'hedge'"),
    Case("defense parameter type", extra('[[defenses]]\nplugin = "hedge"\nsteps = 2.5\n'), "key 'defenses[0].steps'"),
    Case("defense negative radius", extra('[[defenses]]\nplugin = "random"\neps_d = -0.1\n'), "key 'defenses[0].eps_d'"),
    Case("repeats zero", grid("repeats = 0\n" + GRID), "key 'repeats'"),
    Case("seed negative", grid("seed = -1\n" + GRID), "key 'seed'"),
    Case("batch size zero", grid_with("batch_size = 20", "batch_size = 0"), "key 'batch_size'"),
    Case("votes zero", grid("votes = 0\n" + GRID), "key 'votes'"),
    Case("votes even", grid("votes = 4\n" + GRID), "key 'votes'", "odd"),
    Case("votes unbounded", grid("votes = 1000000001\n" + GRID), "key 'votes'", "at most"),
    Case("precision unknown", grid('precision = "fp16"\n' + GRID), "key 'precision'"),
    Case("channels_last not bool", grid('channels_last = "yes"\n' + GRID), "key 'channels_last'"),
    Case("compile not bool", grid("compile = 1\n" + GRID), "key 'compile'"),
    Case("save_examples negative", grid_with("save_examples = 0", "save_examples = -1"), "key 'save_examples'"),
    Case("db not a string", lambda t: grid("db = 3\n" + GRID)(t)[:3], "key 'db'"),
    Case("torchattacks class unknown", extra('[[attacks]]\nplugin = "torchattacks"\nname = "PGDD"\n'),
         "key 'attacks[1]'", "torchattacks has no attack 'PGDD'"),
    Case("torchattacks keyword unknown", extra('[[attacks]]\nplugin = "torchattacks"\nname = "PGD"\nstepz = 3\n'),
         "key 'attacks[1]'", "stepz"),
    # files a grid points at
    Case("checkpoint missing", model(path="{tmp}/absent.pt"), "absent.pt", "not found"),
    Case("checkpoint a directory", model(path="{tmp}"), "is a directory"),
    Case("checkpoint a text file", checkpoint_file(b"these are not weights\n"), "weights.pt", "not a readable torch.save file"),
    Case("checkpoint truncated", checkpoint_file(lambda: DIGITS_ROBUST.read_bytes()[:3000]), "weights.pt"),
    Case("checkpoint with a code payload", checkpoint_file(payload_checkpoint), "weights.pt", "refused"),
    Case("checkpoint of another architecture", model(arch="preact-resnet18", in_channels=3), "does not fit the architecture"),
    Case("model of another data domain", model(dataset="mnist"), "key 'models[0]'", "trained on 'mnist' data"),
    Case("model with NaN logits", checkpoint_file(nan_checkpoint), "key 'models[0]'", "NaN"),
    Case("cifar10-jpeg folder without its files", grid(GRID.replace(
        'dataset = "digits"', 'dataset = { plugin = "cifar10-jpeg", root = "{tmp}/nothing-here" }', 1).replace(
        'dataset = "digits"\nin_channels', 'dataset = "cifar10"\nin_channels')), "nothing-here/test.npz", "not found"),
    Case("cifar10-jpeg with an undecodable image", cifar_jpeg("jpeg"), "test.npz", "image 3"),
    Case("cifar10-jpeg not a zip", cifar_jpeg("zip"), "test.npz", "not a readable cifar10-jpeg split"),
    Case("IDX header cut short", idx_folder("header"), "t10k-images-idx3-ubyte.gz", "truncated"),
    Case("IDX bad magic number", idx_folder("magic"), "t10k-images-idx3-ubyte.gz", "magic"),
    # the results database
    Case("db is a directory", lambda t: grid(GRID)(t)[:3] + ["--db", str(t)], "is a directory"),
    Case("db is random bytes", db_file(lambda p: p.write_bytes(os.urandom(4096))), "out.sqlite", "not an SQLite database"),
    Case("db holds someone else's results table", db_file(foreign_results), "out.sqlite", "not a robustness-harness database"),
    Case("db holds a foreign units table", db_file(foreign_units), "out.sqlite", "not a robustness-harness database"),
    Case("db of another schema version", db_file(other_version), "out.sqlite", "schema version 999"),
    # sysfs takes no new files, not even from root (a chmod'ed folder would not stop root)
    Case("db where nothing can be written", lambda t: grid(GRID)(t)[:3] + ["--db", "/sys/harness-test/out.sqlite"],
         "/sys/harness-test/out.sqlite", "cannot write"),
    # the command line
    Case("n-examples zero", lambda t: grid(GRID)(t) + ["--n-examples", "0"], "--n-examples"),
    Case("shard size without ray", lambda t: grid(GRID)(t) + ["--shard-size", "20"], "--shard-size"),
    Case("report format unknown", with_run("report", "--db", "{tmp}/out.sqlite", "--out", "{tmp}/r", "--format", "pdf"),
         "--format", "html, latex, markdown"),
    Case("report db missing", cli("report", "--db", "{tmp}/none.sqlite", "--out", "{tmp}/r"), "none.sqlite", "does not exist"),
    Case("report db random bytes", lambda t: (file("x.sqlite", os.urandom(2048))(t),
                                              ["report", "--db", str(t / "x.sqlite"), "--out", str(t / "r")])[1],
         "x.sqlite", "not an SQLite database"),
    Case("report out is a file", with_run("report", "--db", "{tmp}/out.sqlite", "--out", "{tmp}/grid.toml"), "grid.toml", "is a file"),
    Case("report run unknown", with_run("report", "--db", "{tmp}/out.sqlite", "--out", "{tmp}/r", "--run", "zzz"), "'zzz'"),
    Case("show db missing", cli("show", "--db", "{tmp}/none.sqlite"), "none.sqlite", "does not exist"),
    Case("show db a directory", cli("show", "--db", "{tmp}"), "is a directory"),
    Case("show db random bytes", lambda t: (file("x.sqlite", os.urandom(2048))(t), ["show", "--db", str(t / "x.sqlite")])[1],
         "x.sqlite", "not an SQLite database"),
    # a paper's reported numbers
    Case("reported model unknown", extra(REPORTED + "[reported.accuracy.robst]\nnone = { pgd = 40.0 }\n"),
         "key 'reported.accuracy.robst'", "did you mean 'robust'"),
    Case("reported attack unknown", extra(REPORTED + "[reported.accuracy.robust]\nnone = { pdg = 40.0 }\n"),
         "key 'reported.accuracy.robust.none.pdg'", "did you mean 'pgd'"),
    Case("reported accuracy above 100", extra(REPORTED + "[reported.accuracy.robust]\nnone = { pgd = 140 }\n"),
         "key 'reported.accuracy.robust.none.pgd'", "0 to 100"),
    Case("reported accuracy as text", extra(REPORTED + '[reported.accuracy.robust]\nnone = { pgd = "40" }\n'),
         "key 'reported.accuracy.robust.none.pgd'", "0 to 100"),
    Case("reported without source", extra('[reported]\nmeasured_on = "CIFAR-10"\n'), "key 'reported.source'", "missing"),
    # values of the wrong kind, and sizes that cannot mean anything
    Case("preset a list", grid('preset = ["paper"]\n' + GRID), "key 'preset'"),
    Case("plugin a number", grid_with('plugin = "pgd"', "plugin = 5"), "key 'attacks[0].plugin'", "a string"),
    Case("plugin a table", grid_with('plugin = "pgd"', "plugin = { a = 1 }"), "key 'attacks[0].plugin'"),
    Case("arrays nested 3,000 deep", grid("x = " + "[" * 3000 + "]" * 3000 + "\n" + GRID), "(syntax)", "nested"),
    Case("repeats a billion", grid("repeats = 1000000000\n" + GRID), "key 'repeats'", "at most"),
    Case("L2 radius beyond the image box", grid_with('norm = "Linf"\neps = 0.1', 'norm = "L2"\neps = 1e6'), "key 'eps'",
         "larger than the whole image box"),
    Case("hedge radius 5", extra('[[defenses]]\nplugin = "hedge"\neps_d = 5\n'), "key 'defenses[0].eps_d'", "[0, 1]"),
    Case("noise radius 1e9", extra('[[defenses]]\nplugin = "random"\neps_d = 1e9\n'), "key 'defenses[0].eps_d'"),
    Case("square p_init 0", extra('[[attacks]]\nplugin = "square"\np_init = 0\n'), "key 'attacks[1]'", "p_init"),
    Case("confidence with the ce loss", extra("confidence = 0.0\n"), "key 'attacks[0]'", "confidence"),
    Case("labels alike after Unicode normalisation", extra('label = "pgd"\n[[attacks]]\nplugin = "pgd"\nlabel = "ｐｇｄ"\n'),
         "key 'attacks[1].label'", "reads as 'pgd'"),
    Case("an attack labelled as the clean baseline", extra('label = "clean"\n'), "key 'attacks[0].label'",
         "clean baseline"),
    Case("torchattacks keyword of the wrong type", extra('[[attacks]]\nplugin = "torchattacks"\nname = "PGD"\nsteps = "ten"\n'),
         "key 'attacks[1]'", "steps = 'ten'"),
    Case("torchattacks eps outside the threat model", extra('[[attacks]]\nplugin = "torchattacks"\nname = "PGD"\nkwargs = { eps = 0.5 }\n'),
         "key 'attacks[1]'", "outside the grid's threat model"),
    Case("apgd-t targets more classes than the data has", extra('[[attacks]]\nplugin = "apgd-t"\nn_target_classes = 12\n'),
         "apgd-t", "at most 9"),
    # files that are not regular files, and damaged databases of ours
    Case("grid is a FIFO", lambda t: ["run", "--grid", str(fifo("grid.toml")(t))], "grid.toml", "not a regular file"),
    Case("checkpoint is a FIFO", lambda t: model(path=str(fifo("weights.pt")(t)))(t), "weights.pt", "not a regular file"),
    Case("db is a FIFO", lambda t: grid(GRID)(t)[:3] + ["--db", str(fifo("fifo.sqlite")(t))], "fifo.sqlite",
         "not a regular file"),
    Case("checkpoint with meta tensors", checkpoint_file(altered_checkpoint("meta")), "weights.pt", "meta device"),
    Case("checkpoint with int64 weights", checkpoint_file(altered_checkpoint("int64")), "weights.pt", "integer values"),
    Case("db with a table dropped", damaged("table"), "out.sqlite", "damaged", "'shards' is missing"),
    Case("db with a column dropped", damaged("column"), "out.sqlite", "damaged", "done"),
    Case("db with a run record that is not JSON", damaged("json"), "out.sqlite", "damaged", "not JSON"),
    Case("db failing SQLite's integrity check", damaged("corrupt"), "out.sqlite"),
    # the command line
    Case("attacks option naming nothing", lambda t: grid(GRID)(t) + ["--attacks", ","], "--attacks", "names no label"),
    Case("dry run and estimate together", lambda t: grid(GRID)(t) + ["--dry-run", "--estimate"], "--dry-run", "--estimate"),
    Case("shard size not a multiple of the batch", lambda t: grid(GRID)(t) + ["--executor", "ray", "--shard-size", "7"],
         "--shard-size 7", "multiple"),
    Case("threads zero", lambda t: grid(GRID)(t) + ["--threads", "0"], "--threads"),
    Case("report out empty", with_run("report", "--db", "{tmp}/out.sqlite", "--out", ""), "--out is empty"),
    Case("compare bound NaN", with_run("compare", "--db", "{tmp}/out.sqlite", "--fail-if-differs", "nan"),
         "--fail-if-differs"),
    Case("compare bound negative", with_run("compare", "--db", "{tmp}/out.sqlite", "--fail-if-differs", "-1"),
         "--fail-if-differs"),
    Case("train eps NaN", cli("train", "--dataset", "digits", "--eps", "nan", "--out", "{tmp}/m.pt"), "--eps"),
    Case("train learning rate negative", cli("train", "--dataset", "digits", "--lr", "-1", "--out", "{tmp}/m.pt"), "--lr"),
    Case("train batch size zero", cli("train", "--dataset", "digits", "--batch-size", "0", "--out", "{tmp}/m.pt"),
         "--batch-size"),
    Case("train device gpu", cli("train", "--dataset", "digits", "--device", "gpu", "--out", "{tmp}/m.pt"), "--device 'gpu'"),
    Case("train n-test negative", cli("train", "--dataset", "digits", "--n-test", "-5", "--out", "{tmp}/m.pt"), "--n-test"),
    Case("train out a directory", cli("train", "--dataset", "digits", "--out", "{tmp}"), "--out", "is a directory"),
]


def test_there_are_at_least_sixty_kinds():
    assert len(CASES) >= 60 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_gets_one_clear_line(case, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    argv = case.make(work)
    db = work / "out.sqlite"
    rows_before = _rows(db)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    # a run's first progress lines come before any check; everything else on stderr is the one error line
    lines = [line for line in err.splitlines() if line.strip() and not re.match(PROGRESS, line)]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), err
    assert "Traceback" not in err + out
    for fragment in case.fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert _rows(db) == rows_before   # nothing written
    assert not os.path.exists("/tmp/harness-malformed-pwned")


def _rows(db: Path) -> int:
    """Result rows in a database of ours (0 where there is none, or it is not ours)."""
    if not db.is_file() or db.read_bytes()[:16] != b"SQLite format 3\x00":
        return 0
    conn = sqlite3.connect(db)
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
        return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] if "run_id" in columns else 0
    finally:
        conn.close()


def test_a_broken_pipe_is_not_an_error():
    """`harness run --dry-run | head -1`: the reader leaves early; no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--grid", "configs/quickstart-digits.toml",
                             "--dry-run"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err, err


INTERRUPTED = "harness: interrupted; every committed batch is kept, and the same command resumes"
# a line the harness prints at each stage: while importing the plugins, once the run is prepared (data and models
# loaded, units recorded), and after the first unit (between units, or inside the next one's first batch)
STAGES = {"importing": "harness run: loading the plugins", "prepared": "grid: ", "between units": "finished "}


LONG_GRID = GRID.replace("steps = 2", "steps = 300").replace("n_examples = 20", "n_examples = 200")


@pytest.fixture(scope="module")
def uninterrupted_rows(tmp_path_factory) -> list[tuple]:
    """The rows of the interrupted grid run once without interruption: what every resumed run must give."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    (folder / "grid.toml").write_text(LONG_GRID)
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--grid", str(folder / "grid.toml"), "--db",
                           str(folder / "whole.sqlite"), "--quiet"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return _result_rows(folder / "whole.sqlite")


@pytest.mark.parametrize("stage", STAGES)
def test_ctrl_c_at_any_stage_is_one_line_exit_130_and_resumable(tmp_path, stage, uninterrupted_rows):
    import signal

    (tmp_path / "grid.toml").write_text(LONG_GRID)
    args = [sys.executable, "-m", "harness.cli", "run", "--grid", str(tmp_path / "grid.toml")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args + ["--db", str(tmp_path / "out.sqlite")], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in proc.stdout:        # wait for the stage's line, not for a guessed time
        seen.append(line)
        if line.startswith(STAGES[stage]):
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    lines = [line for line in ("".join(seen) + rest).splitlines() if line.strip()]
    assert proc.returncode == 130, lines
    assert lines[-1] == INTERRUPTED and sum(INTERRUPTED in line for line in lines) == 1, lines
    assert not any("Traceback" in line or line.startswith("harness: error") for line in lines), lines
    # the same command resumes, and the rows equal those of a run never interrupted
    done = subprocess.run(args + ["--db", str(tmp_path / "out.sqlite"), "--quiet"], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert len(uninterrupted_rows) == 2 * 200 and _result_rows(tmp_path / "out.sqlite") == uninterrupted_rows


def _result_rows(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT unit_key, defense, idx, pred, vote_frac, linf FROM results ORDER BY unit_key, defense, "
                            "idx").fetchall()
    finally:
        conn.close()
