"""Built-in dataset plugins."""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.specs import Kind, PluginSpec, spec_from_dataclass


@hookimpl
def harness_datasets() -> list[PluginSpec]:
    from harness_plugins.datasets.cifar10_jpeg import Cifar10Jpeg
    from harness_plugins.datasets.cifar_pickle import Cifar10, Cifar100
    from harness_plugins.datasets.digits import Digits
    from harness_plugins.datasets.idx import MNIST, FashionMNIST
    from harness_plugins.datasets.imagenet import ImageNet

    return [
        spec_from_dataclass(Digits, name="digits", kind=Kind.DATASET),
        spec_from_dataclass(Cifar10Jpeg, name="cifar10-jpeg", kind=Kind.DATASET),
        spec_from_dataclass(Cifar10, name="cifar10", kind=Kind.DATASET),
        spec_from_dataclass(Cifar100, name="cifar100", kind=Kind.DATASET),
        spec_from_dataclass(FashionMNIST, name="fashion-mnist", kind=Kind.DATASET),
        spec_from_dataclass(MNIST, name="mnist", kind=Kind.DATASET),
        spec_from_dataclass(ImageNet, name="imagenet", kind=Kind.DATASET),
    ]
