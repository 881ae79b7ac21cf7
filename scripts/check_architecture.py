"""Check rmt's layering with ``ast``: packages import downward only, no cycles, imports at the
top of files (a function-level import needs a ``# lazy: <reason>`` comment), no function over
100 lines.

    python scripts/check_architecture.py        # prints the problems, exit status 1 if any

Layers, lowest first (a module may import its own layer and the layers below it):

    errors -> modeling -> tasks -> run -> config -> eval -> train -> sweep -> data -> cli

``rmt`` itself (``rmt/__init__.py``: the version and the model classes) counts as ``modeling``.
``data`` is the public re-export of BABILong's data functions; nothing in the package uses it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "rmt"
LAYERS = ["errors", "modeling", "tasks", "run", "config", "eval", "train", "sweep", "data", "cli"]
MAX_FUNCTION_LINES = 100


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """``rmt.tasks.babilong.task`` -> ``tasks``; ``rmt`` -> ``modeling``; None outside rmt."""
    parts = module.split(".")
    if parts[0] != "rmt":
        return None
    if len(parts) == 1:
        return "modeling"
    return parts[1] if parts[1] in LAYERS else None


def _imports(tree: ast.AST, module: str, is_package: bool):
    """``(imported rmt module, line, at top level)`` for every import of an rmt module."""
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [base]
        else:
            continue
        for name in names:
            yield name, node.lineno, id(node) in top


def check(root: Path = ROOT) -> list[str]:
    """All problems found under ``root``, one line each."""
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source, filename=str(path))
        where = path.relative_to(root.parent)
        mine = layer_of(module)
        graph[module] = set()
        for name, line, at_top in _imports(tree, module, path.name == "__init__.py"):
            if not at_top and "# lazy:" not in lines[line - 1]:
                problems.append(f"{where}:{line}: import inside a function ({name}); move it to "
                                "the top or say why on the line: # lazy: <reason>")  # fmt: skip
            theirs = layer_of(name)
            if theirs is None or mine is None:
                continue
            if name.startswith("rmt"):
                graph[module].add(name)
            if LAYERS.index(theirs) > LAYERS.index(mine):
                problems.append(f"{where}:{line}: {mine} imports {name} ({theirs} is a higher "
                                f"layer; allowed: {' -> '.join(LAYERS[: LAYERS.index(mine) + 1])})")  # fmt: skip
        problems += _long_functions(tree, where)
    problems += _cycles(graph)
    return problems


def _long_functions(tree: ast.AST, where: Path) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{where}:{node.lineno}: function {node.name} has {length} lines "
                           f"(at most {MAX_FUNCTION_LINES}); split it")  # fmt: skip
    return out


def _resolve(name: str, graph: dict[str, set[str]]) -> str | None:
    """The module an import names (``from rmt.x import y`` may name module ``rmt.x.y``)."""
    while name and name not in graph:
        name = name.rpartition(".")[0]
    return name or None


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Import cycles between modules (a package's ``__init__`` importing its own modules and
    those modules importing the package's submodules is not a cycle of meaning: skipped)."""
    edges = {
        m: {t for t in (_resolve(n, graph) for n in names) if t and t != m and not m.startswith(t + ".")}
        for m, names in graph.items()
    }  # fmt: skip
    problems, done, stack = [], set(), []

    def visit(node: str) -> None:
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt in stack:
                cycle = stack[stack.index(nxt) :] + [nxt]
                problems.append("import cycle: " + " -> ".join(cycle))
            elif nxt not in done:
                visit(nxt)
        stack.pop()
        done.add(node)

    for module in sorted(edges):
        if module not in done:
            visit(module)
    return problems


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s) in {ROOT}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
