"""The package's layout: a small root, rooms on floors, imports that only run down, and docs that list
every module.

Each room (a subpackage) sits on a floor; a module may import from its own room and from rooms on lower
floors, never from a room above it or from the entry points at the root. Every import counts, the ones
inside functions too: a lazy import up is still an arrow up, and it still closes a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pure_transformer"
DOCS = PACKAGE.parent / "docs" / "ARCHITECTURE.md"
README = PACKAGE.parent / "README.md"

ENTRY = "(entry)"
"""The root's entry points and every ``__main__``: they may import anything."""
FLOORS = {
    "errors": 0,
    "config": 1, "mcq": 1,
    "model": 2, "tokenizer": 2, "bundled": 2,
    "data": 3, "inference": 3, "distributed": 3, "plan": 3,
    "checkpoint": 4,
    "eval": 5,
    "train": 6, "serving": 6, "deploy": 6,
    "rl": 7,
    "bench": 8,
    "commands": 9,
    ENTRY: 10,
}
ROOT_MODULES = {"__init__", "__main__", "cli", "run_train", "evaluate", "generate", "serve", "launch", "errors"}


def modules() -> dict[str, Path]:
    """Dotted name below the package (``train.pretrain``; ``""`` for the package itself) -> file."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (a name imported from a package counts as its
    submodule when there is one)."""
    known = modules()
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" and "." in name else \
        (name if path.name == "__init__.py" else "")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.split(".")[0] == "pure_transformer":
                target = node.module.removeprefix("pure_transformer").lstrip(".")
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("pure_transformer").lstrip(".") for a in node.names
                         if a.name.split(".")[0] == "pure_transformer")
    return {m for m in found if m in known and m != name}


def room(name: str) -> str:
    if name.split(".")[-1] == "__main__" or (name in ROOT_MODULES or name == "") and name != "errors":
        return ENTRY
    return name.split(".")[0]


def test_the_root_holds_only_entry_points() -> None:
    root = {p.stem for p in PACKAGE.glob("*.py")}
    assert root == ROOT_MODULES and len(root) <= 10
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(FLOORS) - {"errors", ENTRY}, "a new room needs a floor in FLOORS"


def test_no_import_runs_up() -> None:
    up = [f"{name} ({room(name)}, floor {FLOORS[room(name)]}) imports {target} ({room(target)}, "
          f"floor {FLOORS[room(target)]})"
          for name, path in modules().items() for target in sorted(imports(name, path))
          if room(target) != room(name) and FLOORS[room(target)] >= FLOORS[room(name)]]
    assert not up, "\n".join(up)


def test_no_import_circles() -> None:
    graph = {name: imports(name, path) for name, path in modules().items()}
    # A package imports its own submodules only to re-export them, which Python resolves without a circle.
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*stack[stack.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_layout_checks_can_fail() -> None:
    """The checks above read real arrows: the planner once imported the trainer's metrics module."""
    assert "plan.planner" in modules() and "config.pretrain" in imports("plan.planner", modules()["plan.planner"])
    assert FLOORS[room("plan.planner")] < FLOORS[room("train.pretrain")]
    assert "plan.planner" in imports("train.pretrain", modules()["train.pretrain"])


@pytest.mark.parametrize("doc", [DOCS, README], ids=["ARCHITECTURE.md", "README.md"])
def test_docs_list_every_module(doc: Path) -> None:
    text = doc.read_text()
    missing = [str(p.relative_to(PACKAGE)) for p in modules().values()
               if p.name != "__init__.py" and f"`{p.relative_to(PACKAGE)}`" not in text]
    assert not missing, f"{doc.name} does not list: {', '.join(missing)}"
