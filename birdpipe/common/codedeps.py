"""The project code a module runs: the transitive closure of its imports, read with ``ast`` (nothing is imported).

Used by tests/test_dag.py (every dvc.yaml stage must list the project modules its ``cmd`` imports as deps) and by
the training fingerprint (a resumed run must run the same code as the interrupted one). Every import statement
counts, inside functions and ``if TYPE_CHECKING:`` blocks too: a lazy import runs whenever its function does, and
counting one too many costs at most a needless rerun, while one too few lets a stale output pass as current.
Importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``, so parent packages count as well.
"""

from __future__ import annotations

import ast
import hashlib
import re
import shlex
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # birdpipe/common/codedeps.py -> the project root


def module_path(name: str, root: Path | None = None) -> Path | None:
    """The file of project module ``name`` (``a.b`` -> a/b.py or a/b/__init__.py); None when not in the project."""
    base = (root or ROOT).joinpath(*name.split("."))
    for path in (base.parent / f"{base.name}.py", base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_names(path: Path, name: str) -> set[str]:
    """Every module an import statement in ``path`` (module ``name``) may load, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {n for n in found if n}


def module_closure(entries: Iterable[str], root: Path | None = None) -> list[Path]:
    """Project files that running the modules ``entries`` can execute, lazy imports included, sorted."""
    seen: dict[str, Path | None] = {}
    todo = [n for entry in entries for n in _with_parents(entry)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = path = module_path(name, root)
        if path is not None:
            todo += [n for imported in imported_names(path, name) for n in _with_parents(imported)]
    return sorted({p for p in seen.values() if p is not None})


def cmd_modules(cmd: str) -> list[str]:
    """The modules a stage command runs: ``python -m pkg.mod`` and ``python path/to/script.py`` (any of them)."""
    words = shlex.split(cmd.replace("&&", " ; "))
    found = []
    for i, word in enumerate(words):
        if not re.fullmatch(r"(.*/)?python[\d.]*", word):
            continue
        rest = words[i + 1 :]
        if len(rest) >= 2 and rest[0] == "-m":
            found.append(rest[1])
        elif rest and rest[0].endswith(".py"):
            found.append(rest[0].removeprefix("./").removesuffix(".py").replace("/", "."))
    return found


def code_digest(entries: Iterable[str], root: Path | None = None) -> dict[str, str]:
    """sha256 of every project file ``entries`` can run, keyed by its path relative to the project root."""
    root = root or ROOT
    files = module_closure(entries, root)
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
