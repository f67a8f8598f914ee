"""Fashion-MNIST, CIFAR pickle folders, zoo models and the trainer, on real files."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import harness_cli, shared_file
from harness.api.errors import DataError, PluginError
from harness_plugins.datasets.cifar_pickle import Cifar10, Cifar100
from harness_plugins.datasets.idx import FashionMNIST, read_idx
from harness_plugins.models.zoo import AutoAttackExample, RobustBenchModel

CPU = torch.device("cpu")
FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_fashion_mnist_from_debians_package():
    if not FASHION.exists():
        pytest.fail(f"{FASHION} is missing: install it with apt-get install dataset-fashion-mnist (scripts/setup.sh does)")
    data = FashionMNIST().load(100)
    assert data.x.shape == (100, 1, 28, 28) and data.num_classes == 10 and data.classes[9] == "Ankle boot"
    assert 0.0 <= float(data.x.min()) and float(data.x.max()) <= 1.0
    x, y = FashionMNIST().train_arrays()
    assert x.shape == (60000, 1, 28, 28) and y.shape == (60000,)


def test_idx_errors(tmp_path):
    raw = gzip.decompress((FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "short").write_bytes(raw[:500])
    with pytest.raises(DataError, match=r"short is truncated: header says \(10000,\)"):
        read_idx(tmp_path / "short")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"bad.gz cannot be read \(corrupt or truncated gzip\?\)"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz not found. Fix: apt-get install dataset-fashion-mnist"):
        FashionMNIST(root=str(tmp_path / "none")).load(5)


def _write_cifar(folder: Path, n: int = 30, labels_key: str = "labels") -> np.ndarray:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": data, labels_key: [i % 10 for i in range(n)], "batch_label": "testing batch 1 of 1"}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return data


def test_cifar10_pickle_folder_is_parsed(tmp_path):
    data = _write_cifar(tmp_path / "cifar-10-batches-py")
    loaded = Cifar10(root=str(tmp_path)).load(30)
    assert loaded.x.shape == (30, 3, 32, 32) and loaded.classes[3] == "class3"
    # the pickle stores rows as R(1024) G(1024) B(1024): pixel (0,0) of channel 1 is entry 1024
    assert float(loaded.x[0, 1, 0, 0]) == pytest.approx(data[0, 1024] / 255)
    assert loaded.y.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    with pytest.raises(DataError, match="dataset 'cifar10' has 30 test examples; n_examples = 31 is larger"):
        Cifar10(root=str(tmp_path)).load(31)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/harness-cifar-pwned",))


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": _Evil(), "labels": [0]}, f)
    with pytest.raises(DataError, match=r"refusing to load posix.system"):
        Cifar10(root=str(tmp_path)).load(1)
    assert not os.path.exists("/tmp/harness-cifar-pwned")


def test_cifar_missing_and_malformed(tmp_path):
    with pytest.raises(DataError, match=r"cifar100: .*cifar-100-python/test not found. Fix: .*download = true"):
        Cifar100(root=str(tmp_path)).load(5)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((4, 100), dtype=np.uint8), "labels": [0, 1, 2, 3]}, f)
    with pytest.raises(DataError, match=r"expected data of shape \(N, 3072\), got \(4, 100\)"):
        Cifar10(root=str(tmp_path)).load(2)


def test_autoattack_example_model_loads_and_predicts(cifar):
    loaded = AutoAttackExample().load(CPU)
    assert loaded.dataset == "cifar10" and loaded.num_classes == 10 and not loaded.module.training
    with torch.no_grad():
        assert float((loaded.module(cifar.x).argmax(1) == cifar.y).float().mean()) >= 0.5


def test_robustbench_plugin_loads_a_shared_checkpoint_from_model_dir(tmp_path, cifar):
    target = tmp_path / "cifar10" / "Linf" / "Wong2020Fast.pt"
    target.parent.mkdir(parents=True)
    shutil.copy(shared_file("models/cifar10-jpeg/fastat40.pt"), target)
    loaded = RobustBenchModel(name="Wong2020Fast", model_dir=str(tmp_path)).load(CPU)
    with torch.no_grad():
        assert float((loaded.module(cifar.x).argmax(1) == cifar.y).float().mean()) >= 0.6


def test_robustbench_offline_error_names_the_file(tmp_path, monkeypatch):
    from harness.api.compat import import_robustbench

    import_robustbench()
    import robustbench.utils

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(robustbench.utils, "download_gdrive_new", offline)
    with pytest.raises(DataError) as info:
        RobustBenchModel(name="Carmon2019Unlabeled", model_dir=str(tmp_path)).load(CPU)
    message = str(info.value)
    assert f"is not in {tmp_path}/cifar10/Linf/Carmon2019Unlabeled.pt and could not be downloaded here (ConnectionError)" in message
    assert "fetch Google Drive id" in message and "Traceback" not in message
    assert not (tmp_path / "cifar10" / "Linf" / "Carmon2019Unlabeled.pt").exists()  # no half-written file left
    with pytest.raises(PluginError, match=r"RobustBench has no cifar10 Linf model 'Carmon2019Unlabelled'; did you mean"):
        RobustBenchModel(name="Carmon2019Unlabelled", model_dir=str(tmp_path)).check()


def test_dry_run_validates_the_paper_grid_and_lists_files():
    out = harness_cli("run", "--grid", "configs/table1.toml", "--dry-run").stdout
    assert "needs file: models/cifar10/Linf/Gowal2020Uncovering_70_16_extra.pt" in out
    assert out.count("needs file:") == 8


def test_trainer_resumes_an_interrupted_run(tmp_path, monkeypatch):
    import harness_plugins.models.train as train_module
    from harness_plugins.datasets.digits import Digits, digits_arrays

    x, y = digits_arrays("train")
    test = Digits().load(100)
    make = lambda out: train_module.TrainConfig(arch="small-cnn", dataset="digits", out=str(out), method="fgsm-rs",  # noqa: E731
                                                eps=0.1, epochs=3, holdout=100)
    straight = train_module.train(make(tmp_path / "a.pt"), x, y, test.x, test.y, progress=False)

    real, calls = train_module.pgd_accuracy, []

    def crash_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "pgd_accuracy", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(make(tmp_path / "b.pt"), x, y, test.x, test.y, progress=False)
    assert (tmp_path / "b.train-state.pt").exists()
    monkeypatch.setattr(train_module, "pgd_accuracy", real)
    resumed = train_module.train(make(tmp_path / "b.pt"), x, y, test.x, test.y, progress=False)
    assert [e["holdout_pgd"] for e in resumed["epochs"]] == [e["holdout_pgd"] for e in straight["epochs"]]
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "b.train-state.pt").exists()


def test_every_training_method_runs_an_epoch(tmp_path):
    from harness_plugins.datasets.digits import Digits, digits_arrays
    from harness_plugins.models.train import TrainConfig, train

    x, y = digits_arrays("train")
    test = Digits().load(100)
    for method in ("standard", "fgsm-rs", "pgd", "trades"):
        record = train(TrainConfig(arch="small-cnn", dataset="digits", out=str(tmp_path / f"{method}.pt"),
                                   method=method, eps=0.1, epochs=3, pgd_steps=3), x, y, test.x, test.y, progress=False)
        assert record["test_clean"] > 0.3, (method, record["test_clean"])  # chance is 0.1
        assert (tmp_path / f"{method}.json").exists()


def test_preact_resnet18_arch_builds_for_the_trainer():
    from harness_plugins.models.archs import ARCHS

    model = ARCHS["preact-resnet18"](10, 3)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_imagenet_folder_in_robustbench_order(tmp_path, cifar):
    """A small ImageFolder of real photos (CIFAR JPEGs, upscaled) named as RobustBench's first five list entries."""
    from PIL import Image

    from harness_plugins.datasets.imagenet import ImageNet, robustbench_helper

    first = robustbench_helper("imagenet_test_image_ids.txt").read_text().split()[:5]
    for i, relative in enumerate(first):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        array = (cifar.x[i].permute(1, 2, 0).numpy() * 255).astype("uint8")
        Image.fromarray(array).resize((300, 240)).save(path, format="JPEG")
    data = ImageNet(root=str(tmp_path)).load(5)
    assert data.x.shape == (5, 3, 224, 224) and data.num_classes == 1000 and data.domain == "imagenet"
    import json

    ids = json.loads(robustbench_helper("imagenet_class_to_id_map.json").read_text())
    assert data.y.tolist() == [ids[r.split("/")[0]] for r in first]
    with pytest.raises(DataError, match=r"imagenet: .* not found \(from RobustBench's subset list\)"):
        ImageNet(root=str(tmp_path)).load(6)
    with pytest.raises(DataError, match=r"imagenet: .*nowhere is not a folder"):
        ImageNet(root=str(tmp_path / "nowhere")).load(1)
