"""robustness-harness: evaluate classifiers and test-time defenses against adversarial attacks.

The core's packages: ``api`` (what plugins see), ``grid`` (a grid file becomes keyed work units), ``run``
(evaluating them), ``storage`` (the SQLite store), ``analysis`` (worst cases and statistics), and ``cli``."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

__version__ = "0.1.0"

# The flat modules of 0.1.0, importable under their old names for one release (with a warning).
_MOVED = {
    **{old: f"api.{old}" for old in ("interfaces", "specs", "registration", "hookspecs", "registry", "code_identity",
                                     "losses", "sign_gradient", "seeding", "threat", "cost", "errors", "compat")},
    **{old: f"grid.{old}" for old in ("config", "values", "presets", "fingerprint", "plan", "reported", "naming")},
    **{old: f"run.{old}" for old in ("runner", "batch", "checks", "defended", "progress", "estimate", "ray_executor",
                                     "counting", "chatter", "observers", "device", "precision", "flops",
                                     "provenance")},
    **{old: f"storage.{old}" for old in ("records", "store")},
    **{old: f"analysis.{old}" for old in ("aggregate", "stats", "pairing", "compare", "analytics", "summary",
                                          "notices")},
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import harness.config`` gives ``harness.grid.config`` itself (one module object), and warns."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        prefix, _, old = fullname.partition(".")
        if prefix != __name__ or old not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = f"{__name__}.{_MOVED[spec.name.partition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; the old name goes in the next release (plugins: import "
                      f"harness.api)", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module is the moved one, already imported."""


# first: the editable install's finder claims every harness.* name
sys.meta_path.insert(0, _MovedModules())
