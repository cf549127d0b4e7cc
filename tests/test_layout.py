"""The package layout stays readable: no import cycles among project modules, no module grows unbounded.

The import graph is the one birdpipe/common/codedeps.py reads for the DVC deps (every import statement, lazy
ones and ``if TYPE_CHECKING:`` blocks included), with an edge to the most specific project module named.
"""

from __future__ import annotations

from pathlib import Path

from birdpipe.common.codedeps import ROOT, imported_names, module_path

MAX_LINES = 450
LONG_MODULES = {  # module -> why it may exceed MAX_LINES
    "birdpipe/common/params.py": "the one typed schema of params.yaml: one dataclass per section, kept together",
}
KNOWN_CYCLES = {  # closed only by a lazy (in-function or TYPE_CHECKING) import, kept lazy on purpose
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted([*ROOT.glob("birdpipe/**/*.py"), *ROOT.glob("stages/*.py")]):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for imported in imported_names(path, name):
            while imported and module_path(imported) is None:  # `from pkg.mod import name` -> pkg.mod
                imported = imported.rpartition(".")[0]
            if imported in modules and imported != name:
                edges.add(imported)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_among_project_modules() -> None:
    unexpected = [sorted(c) for c in cycles(import_graph()) if c not in KNOWN_CYCLES]
    assert not unexpected, f"import cycles: {unexpected}"


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_no_module_over_the_line_limit_without_a_reason() -> None:
    long = {
        path.relative_to(ROOT).as_posix(): n
        for path in _modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    unlisted = {path: n for path, n in long.items() if path not in LONG_MODULES}
    assert not unlisted, f"modules over {MAX_LINES} lines; split them or list a reason in LONG_MODULES: {unlisted}"
    stale = set(LONG_MODULES) - set(long)
    assert not stale, f"LONG_MODULES lists modules that are short now or gone: {stale}"
