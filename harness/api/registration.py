"""Registration in one line: a plugin class names itself where it is defined,

    @dataclass(frozen=True)
    class MIFGSM(Attack, name="mi-fgsm"): ...

and its base (Attack, Defense, ModelSource, DataSource) says its kind. The module or package an entry point of
the ``harness`` group names is imported, every module of a package with it, and the registry takes the classes
declared there; built-ins are found the same way. A subclass that gives no name is not registered (it is
someone's variant, registered only if it names itself)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any, ClassVar

from harness.api.errors import PluginError

# (module, qualified name) → the class defined there and its plugin id, in the order the classes were defined; a
# module imported again (a reinstalled plugin, importlib.reload) replaces its classes rather than adding twins
_DECLARED: dict[tuple[str, str], tuple[type, str]] = {}


class Registrable:
    """Base of the four plugin bases: takes the ``name=`` of a class statement, and holds what a plugin declares
    about its own grid keys."""

    # the parameter whose value names a grid entry that gives no label (a zoo's model ID, a library's class name)
    label_param: ClassVar[str | None] = None
    # a dict parameter that takes the entry's keys the plugin does not declare (a bridge to another library's
    # classes, whose arguments it cannot list)
    open_param: ClassVar[str | None] = None

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is None:
            return
        if not isinstance(name, str) or not name or name != name.strip() or any(c.isspace() for c in name):
            raise PluginError(f"{cls.__module__}.{cls.__qualname__}: a plugin's name is one word that grids write "
                              f"after plugin = (e.g. name=\"mi-fgsm\"), got {name!r}")
        _DECLARED[(cls.__module__, cls.__qualname__)] = (cls, name)


def declared_under(module: ModuleType) -> list[tuple[type, str]]:
    """(class, id) of every plugin class defined in ``module`` or, for a package, in any module inside it; the
    package's modules are imported here, so a package needs no list of its plugins."""
    if getattr(module, "__path__", None) is not None:   # a package
        for found in pkgutil.walk_packages(module.__path__, module.__name__ + "."):
            importlib.import_module(found.name)
    prefix = module.__name__
    return [(cls, name) for cls, name in _DECLARED.values()
            if cls.__module__ == prefix or cls.__module__.startswith(prefix + ".")]
