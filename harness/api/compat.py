"""The one place that makes robustbench importable.

robustbench 1.1.1 does ``from autoattack import AutoAttack`` and ``from autoattack.state import ...``,
but its PyPI dependency installs the module as ``pyautoattack``. It also imports ``pkg_resources``,
which needs ``setuptools<81``. Every harness module that needs robustbench calls :func:`import_robustbench`.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

from harness.api.errors import HarnessError

_AUTOATTACK_SUBMODULES = ("autoattack", "autopgd_base", "fab_pt", "fab_base", "fab_projections",
                          "square", "state", "checks", "other_utils")


def alias_autoattack() -> ModuleType:
    """Expose ``pyautoattack`` (and its submodules) under the name ``autoattack``."""
    if "autoattack" in sys.modules:
        return sys.modules["autoattack"]
    try:
        package = importlib.import_module("pyautoattack")
    except ImportError as exc:  # pragma: no cover - a broken install
        raise HarnessError("AutoAttack is not installed. Fix: pip install pyautoattack") from exc
    sys.modules["autoattack"] = package
    for name in _AUTOATTACK_SUBMODULES:
        sys.modules[f"autoattack.{name}"] = importlib.import_module(f"pyautoattack.{name}")
    return package


def import_robustbench() -> ModuleType:
    alias_autoattack()
    try:
        with warnings.catch_warnings():  # its pkg_resources and torch.jit deprecation noise
            warnings.simplefilter("ignore")
            return importlib.import_module("robustbench")
    except ModuleNotFoundError as exc:
        if exc.name == "pkg_resources":
            raise HarnessError("robustbench needs pkg_resources. Fix: pip install 'setuptools<81'") from exc
        raise HarnessError(f"robustbench could not be imported ({exc}). Fix: pip install robustbench==1.1.1") from exc
