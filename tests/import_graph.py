"""The project's import graph as Python builds it at import time, read from the source.

Only imports that run when a module is imported count: statements at module level, in
``if``/``try``/``with`` blocks and class bodies there, but not inside functions (deferred
on purpose) nor under ``if TYPE_CHECKING:``. Importing ``a.b.c`` also runs ``a`` and
``a.b``; ``from a import b`` runs ``a.b`` when that is a module of its own.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional


@dataclass(frozen=True)
class Violation:
    """``module`` reaches ``target``, one of the forbidden names, through ``chain`` (the last
    module of which is ``target`` or one of its submodules)."""

    module: str
    target: str
    chain: tuple[str, ...]

    def __str__(self) -> str:
        return " -> ".join(self.chain)


class ImportGraph:
    """Module-level imports of the packages under ``root``."""

    def __init__(self, root: Path, packages: tuple[str, ...]):
        self.root = root
        self.packages = packages
        self._edges: dict[str, set[str]] = {}

    def modules(self, package: str) -> list[str]:
        """Every module of ``package`` (the package itself included), by dotted name."""
        names = []
        for path in sorted((self.root / package).rglob("*.py")):
            parts = path.relative_to(self.root).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        return names

    def _path(self, module: str) -> Optional[Path]:
        base = self.root.joinpath(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def _exists(self, module: str) -> bool:
        """A project module with a file, or any outside name (judged by its top-level package)."""
        return not self._is_project(module) or self._path(module) is not None

    def _is_project(self, module: str) -> bool:
        return module.split(".")[0] in self.packages

    def imports(self, module: str) -> set[str]:
        """What importing ``module`` imports directly (project modules with their parent packages)."""
        if module not in self._edges:
            path = self._path(module)
            found: set[str] = set()
            if path is not None:
                tree = ast.parse(path.read_text(), filename=str(path))
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for name in _module_level_imports(tree.body, package):
                    found.update(part for part in self._with_parents(name) if self._exists(part))
            parent = module.rpartition(".")[0]
            if parent:
                found.add(parent)  # a submodule's import runs its package first
            found.discard(module)
            self._edges[module] = found
        return self._edges[module]

    def _with_parents(self, name: str) -> Iterator[str]:
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            yield ".".join(parts[:end])

    def violations(self, module: str, forbidden: set[str]) -> list[Violation]:
        """Every forbidden name (a module and its submodules) reached from ``module``, with one shortest chain each."""
        chains = {module: (module,)}
        queue = [module]
        found: dict[str, Violation] = {}
        while queue:
            current = queue.pop(0)
            for target in sorted(self.imports(current)):
                if target in chains:
                    continue
                chain = chains[current] + (target,)
                matched = _matched(target, forbidden)
                if matched is not None:
                    found.setdefault(matched, Violation(module, matched, chain))
                    continue
                chains[target] = chain
                if self._is_project(target):
                    queue.append(target)
        return list(found.values())


def _matched(module: str, forbidden: set[str]) -> Optional[str]:
    """The forbidden name ``module`` is or lies within, if any."""
    return next((name for name in sorted(forbidden) if module == name or module.startswith(name + ".")), None)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body: list[ast.stmt], package: str) -> Iterator[str]:
    for node in body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"  # a submodule when there is one; dropped otherwise
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level_imports(node.body, package)
            yield from _module_level_imports(node.orelse, package)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level_imports(block, package)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _module_level_imports(node.body, package)


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base
