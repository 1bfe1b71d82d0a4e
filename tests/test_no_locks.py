"""DESIGN I10: triact.actors and triact.sessions take no locks; ownership is the
synchronisation."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import triact

PACKAGE = Path(triact.__file__).parent
LOCKS = {"Lock", "RLock", "StrictFIFOLock", "Semaphore", "BoundedSemaphore", "Condition"}
LOCK_MODULES = {"trio", "asyncio", "threading", "multiprocessing", "anyio"}


def _lock_uses(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in LOCKS:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "") in LOCK_MODULES:
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name in LOCKS]
    return found


@pytest.mark.parametrize("subpackage", ["actors", "sessions"])
def test_no_lock_is_used(subpackage: str) -> None:
    files = sorted((PACKAGE / subpackage).glob("*.py"))
    assert files
    uses = {str(f.name): _lock_uses(f.read_text()) for f in files}
    assert {name: found for name, found in uses.items() if found} == {}


def test_the_check_sees_a_lock() -> None:
    assert _lock_uses("import trio\nlock = trio.Lock()\n") == ["line 2: .Lock"]
    assert _lock_uses("from threading import RLock\n") == ["line 1: import RLock"]
