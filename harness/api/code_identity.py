"""Which code computes a plugin's rows: its distribution, its version, and a digest of its source.

A unit's identity holds this for every plugin it uses, so that a new release of a plugin, or an edited
plugin in an editable install, computes its units again instead of showing the old rows as its own.
The version alone cannot vouch for the code (an editable install, a plugin registered in code, a local
folder installed twice under one version), so the digest is taken wherever the source can be read.

The digest covers the plugin's module and every module of the same top-level package that it imports,
directly or through each other, anywhere in their code (imports inside functions included). It is taken
over the syntax tree without docstrings and import statements: reformatting, comments, documentation and
moving a name the plugin imports from one module of the core to another leave it unchanged; any change
to what the plugin's own code does changes it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CodeIdentity:
    """A plugin's code as recorded in every unit that uses it."""

    distribution: str | None   # the installed distribution that registered it; None: registered in code
    version: str | None
    source: str | None         # sha256 of its normalised source (see the module's docstring); None: unreadable
    editable: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"distribution": self.distribution, "version": self.version, "source": self.source}

    def describe(self) -> str:
        """e.g. "robustness-harness 0.1.0 (editable)"; how `harness plugins` and the reports name it."""
        if self.distribution is None:
            return "(registered in code)"
        return f"{self.distribution} {self.version}" + (" (editable)" if self.editable else "")


def distribution_identity(dist: metadata.Distribution | None) -> tuple[str | None, str | None, bool]:
    """(name, version, editable) of an installed distribution; editable from its PEP 610 record."""
    if dist is None:
        return None, None, False
    editable = False
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        editable = bool(direct.get("dir_info", {}).get("editable"))
    except (ValueError, OSError):
        pass
    return dist.metadata["name"], dist.version, editable


def code_identity(module_name: str, dist: metadata.Distribution | None) -> CodeIdentity:
    name, version, editable = distribution_identity(dist)
    return CodeIdentity(name, version, source_digest(module_name), editable)


def source_digest(module_name: str) -> str | None:
    """sha256 over the normalised source of ``module_name`` and the modules of its package it imports."""
    top = module_name.split(".")[0]
    seen: dict[str, str] = {}
    queue = [module_name]
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        tree = _tree(name)
        if tree is None:
            if name == module_name:
                return None  # no readable source (a compiled module): the version is all there is
            continue
        seen[name] = _normalised(tree)
        queue += [m for m in _imported(tree, name, _is_package(name)) if m.split(".")[0] == top]
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(f"{name}\0{seen[name]}\0".encode())
    return digest.hexdigest()


def _source_path(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    origin = getattr(spec, "origin", None) if spec is not None else None
    return Path(origin) if origin and origin.endswith(".py") else None


def _is_package(name: str) -> bool:
    path = _source_path(name)
    return path is not None and path.name == "__init__.py"


def _tree(name: str) -> ast.Module | None:
    path = _source_path(name)
    if path is None:
        return None
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _imported(tree: ast.Module, name: str, is_package: bool) -> list[str]:
    """Every module an import statement in ``tree`` may load (``from a import b``: a, and a.b if b is one)."""
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            out.append(base)
            out += [f"{base}.{alias.name}" for alias in node.names if _source_path(f"{base}.{alias.name}")]
    return out


def _normalised(tree: ast.Module) -> str:
    """The tree without imports and docstrings, as text that ignores layout and comments."""
    tree = _Strip().visit(tree)
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


class _Strip(ast.NodeTransformer):
    def visit_Import(self, node: ast.AST) -> None:
        return None

    visit_ImportFrom = visit_Import

    def generic_visit(self, node: ast.AST) -> ast.AST:
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
        return super().generic_visit(node)
