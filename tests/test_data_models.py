"""Dataset and model plugins on real files; bad files get clear errors."""

from __future__ import annotations

import os
import pickle
import shutil

import pytest
import torch

from conftest import DIGITS_ROBUST, shared_file
from harness.api.errors import DataError, PluginError
from harness_plugins.datasets.cifar10_jpeg import Cifar10Jpeg
from harness_plugins.datasets.digits import Digits
from harness_plugins.models.checkpoint import Checkpoint

CPU = torch.device("cpu")


def test_digits_is_a_fixed_real_split():
    data = Digits().load(497)
    assert data.x.shape == (497, 1, 8, 8) and data.x.dtype == torch.float32
    assert 0 <= float(data.x.min()) and float(data.x.max()) <= 1
    assert torch.equal(Digits().load(10).y, data.y[:10])
    assert sorted(set(data.y.tolist())) == list(range(10))
    with pytest.raises(DataError, match=r"dataset 'digits' has 497 test examples; n_examples = 498 is larger"):
        Digits().load(498)


def test_cifar10_jpeg_loads_balanced_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    root = shared_file("data/cifar10-jpeg/test.npz").parent
    data = Cifar10Jpeg(root=str(root)).load(30)
    assert data.x.shape == (30, 3, 32, 32)
    assert data.display_name == "CIFAR-10 (JPEG)" and data.domain == "cifar10"
    assert data.classes[0] == "airplane" and data.classes[9] == "truck"
    assert torch.equal(torch.bincount(data.y, minlength=10), torch.full((10,), 3))  # 10·k images hold k per class
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    again = Cifar10Jpeg(root=str(root)).load(30)                                # from the cache
    assert torch.equal(again.x, data.x)


def test_cifar10_jpeg_path_from_environment_and_missing_path(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CIFAR10_JPEG", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"nowhere/test.npz not found. Fix: set root = .* or the environment variable "
                                        r"HARNESS_CIFAR10_JPEG"):
        Cifar10Jpeg().load(5)


def test_corrupt_cifar_file(tmp_path):
    (tmp_path / "test.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="is not a readable cifar10-jpeg split"):
        Cifar10Jpeg(root=str(tmp_path)).load(5)


def test_checkpoint_loads_robustbench_architecture_from_shared_weights(cifar):
    path = shared_file("models/cifar10-jpeg/fastat40.pt")
    loaded = Checkpoint(arch="robustbench:cifar10:Linf:Wong2020Fast", path=str(path)).load(CPU)
    assert loaded.dataset == "cifar10" and not loaded.module.training
    with torch.no_grad():
        assert float((loaded.module(cifar.x).argmax(1) == cifar.y).float().mean()) >= 0.6


def test_strips_module_prefix(tmp_path, digits):
    state = torch.load(DIGITS_ROBUST, weights_only=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pt")
    model = Checkpoint(arch="small-cnn", path=str(tmp_path / "wrapped.pt"), dataset="digits", in_channels=1).load(CPU)
    with torch.no_grad():
        assert float((model.module(digits.x).argmax(1) == digits.y).float().mean()) > 0.9


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/harness-pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": _Evil()}, path, pickle_module=pickle)
    with pytest.raises(DataError, match=r"evil.pt was refused: it is not a plain weights file"):
        Checkpoint(arch="small-cnn", path=str(path), dataset="digits", in_channels=1).load(CPU)
    assert not os.path.exists("/tmp/harness-pwned")


def test_corrupt_and_truncated_checkpoints(tmp_path):
    data = DIGITS_ROBUST.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.pt is not a readable torch.save file \(truncated, corrupt"):
        Checkpoint(arch="small-cnn", path=str(tmp_path / "cut.pt"), dataset="digits", in_channels=1).load(CPU)
    with pytest.raises(DataError, match=r"checkpoint .*nope.pt not found"):
        Checkpoint(arch="small-cnn", path=str(tmp_path / "nope.pt"), dataset="digits").load(CPU)


def test_wrong_architecture_lists_offending_keys():
    path = shared_file("models/cifar10-jpeg/fastat.pt")
    with pytest.raises(DataError, match=r"does not fit the architecture: missing keys: mean, std, net.conv1.weight, .*; "
                                        r"unexpected keys: mu, sigma, conv1.weight"):
        Checkpoint(arch="small-cnn", path=str(path), dataset="cifar10").load(CPU)


def test_unknown_architectures():
    with pytest.raises(PluginError, match=r"unknown arch 'small_cnn'; did you mean 'small-cnn'"):
        Checkpoint(arch="small_cnn", path="x", dataset="digits").load(CPU)
    with pytest.raises(PluginError, match=r"RobustBench has no cifar10 Linf model 'Wong2020Fats'; did you mean 'Wong2020Fast'"):
        Checkpoint(arch="robustbench:cifar10:Linf:Wong2020Fats", path="x").load(CPU)


def test_robustbench_load_model_through_the_compat_alias(tmp_path, cifar):
    """robustbench's own loader, offline, from a local model_dir laid out as it expects."""
    from harness.api.compat import import_robustbench

    rb = import_robustbench()
    target = tmp_path / "cifar10" / "Linf" / "Wong2020Fast.pt"
    target.parent.mkdir(parents=True)
    shutil.copy(shared_file("models/cifar10-jpeg/fastat40.pt"), target)
    model = rb.load_model("Wong2020Fast", model_dir=str(tmp_path), dataset="cifar10", threat_model="Linf")
    import autoattack  # the alias robustbench relies on
    assert autoattack.__name__ == "pyautoattack"
    with torch.no_grad():
        assert float((model(cifar.x).argmax(1) == cifar.y).float().mean()) >= 0.6


def test_cifar10_jpeg_finds_the_copy_beside_the_repository_or_says_where_it_looked(monkeypatch, tmp_path):
    from harness.api.errors import DataError
    from harness_plugins.datasets import cifar10_jpeg

    monkeypatch.delenv(cifar10_jpeg.ROOT_ENV, raising=False)
    assert Cifar10Jpeg().folder() == next(f for f in cifar10_jpeg.DEFAULT_ROOTS if (f / "test.npz").exists())
    monkeypatch.setattr(cifar10_jpeg, "DEFAULT_ROOTS", (tmp_path / "a", tmp_path / "b"))
    with pytest.raises(DataError, match=r"no folder given, and none of .*/a, .*/b holds test.npz"):
        Cifar10Jpeg().folder()
