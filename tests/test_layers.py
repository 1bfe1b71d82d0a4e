"""The layers point one way (cli -> work -> transport -> sessions -> actors; aio and
testing beside): no module imports a layer it may not use."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import triact

PACKAGE = Path(triact.__file__).parent
#: Each layer and the layers its modules may import (besides their own).
ALLOWED: dict[str, set[str]] = {
    "actors": set(),
    "sessions": {"actors"},
    "transport": {"sessions", "actors"},
    "work": {"transport", "sessions", "actors"},
    "aio": {"sessions", "actors"},
    "testing": {"work", "transport", "sessions", "actors", "aio"},
    "cli": {"testing", "work", "transport", "sessions", "actors", "aio"},
}
#: Modules at the top of the package that belong to the command line.
CLI_MODULES = {"cli", "_serve", "_demo", "__main__"}
#: Leaves any layer may import: they import nothing of triact (checked below).
#: ``_cli_args`` holds argument types, shared by the CLI and ``triact.testing``;
#: ``_writable``, how the sessions' states and the transport's values are built.
LEAVES = {"_version", "_public", "_cli_args", "_writable"}


def layer_of(module: str) -> str:
    """The layer of a module of triact, by its dotted name; "triact" itself re-exports
    the sessions layer."""
    parts = module.split(".")
    assert parts[0] == "triact", module
    if len(parts) == 1:
        return "sessions"
    top = parts[1]
    if top in LEAVES:
        return "leaf"
    if top in CLI_MODULES:
        return "cli"
    assert top in ALLOWED, f"{module}: a module in no known layer; add it to ALLOWED"
    return top


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported(module: str, is_package: bool, source: str) -> list[tuple[int, str]]:
    """Every triact module that ``source`` (of ``module``) imports, with its line."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
            else:
                base = ""
            target = ".".join(part for part in (base, node.module or "") if part)
            for alias in node.names:  # from triact import work: the name is a module
                child = f"{target}.{alias.name}"
                found.append((node.lineno, child if is_module(child) else target))
    return [(line, name) for line, name in found if name.split(".")[0] == "triact"]


def violations(module: str, is_package: bool, source: str) -> list[str]:
    own = layer_of(module)
    if own == "leaf":
        return [f"line {line}: {name}" for line, name in imported(module, is_package, source)]
    allowed = ALLOWED[own] | {own, "leaf"}
    return [
        f"line {line}: {name} ({layer_of(name)})"
        for line, name in imported(module, is_package, source)
        if layer_of(name) not in allowed
    ]


def test_no_module_imports_against_the_layer_order() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    found = {
        module_name(f): violations(module_name(f), f.name == "__init__.py", f.read_text())
        for f in files
    }
    assert {name: lines for name, lines in found.items() if lines} == {}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("triact.sessions._x", "from ..transport import McpServer\n", ["line 1: triact.transport"]),
        ("triact.actors._x", "import triact.sessions\n", ["line 1: triact.sessions"]),
        ("triact.transport._x", "from triact import work\n", ["line 1: triact.work"]),
        ("triact.work._x", "from .. import _serve\n", ["line 1: triact._serve"]),
        (
            "triact.aio._x",
            "from ..transport._tools import Tool\n",
            ["line 1: triact.transport._tools"],
        ),
        ("triact.work._x", "from ..transport import Tool\nfrom . import _git\n", []),
        ("triact._serve", "from .work import work_tools\nfrom .testing import x\n", []),
    ],
)
def test_the_check_sees_an_import_against_the_order(
    module: str, source: str, expected: list[str]
) -> None:
    found = violations(module, False, source)
    assert [entry.partition(" (")[0] for entry in found] == expected
