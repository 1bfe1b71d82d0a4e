"""Every public name imports from its package and reports a public module (the
package's, where a private module defines it)."""

from __future__ import annotations

import importlib
import inspect

import attrs
import pytest

PACKAGES = [
    "triact",
    "triact.actors",
    "triact.sessions",
    "triact.transport",
    "triact.work",
    "triact.aio",
    "triact.testing",
]


def _exports(package: str) -> list[tuple[str, str]]:
    return [(package, name) for name in importlib.import_module(package).__all__]


@pytest.mark.parametrize(
    ("package", "name"), [export for package in PACKAGES for export in _exports(package)]
)
def test_each_public_name_imports_and_reports_a_public_module(package: str, name: str) -> None:
    obj = getattr(importlib.import_module(package), name)
    module = getattr(obj, "__module__", None)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)) or module is None:
        return  # constants and type aliases: importing them is the check
    assert module.startswith("triact"), f"{package}.{name} comes from {module}"
    assert not any(part.startswith("_") for part in module.split(".")), module
    assert getattr(importlib.import_module(module), name) is obj


def test_annotations_resolve_after_the_move() -> None:
    # The schemas and cattrs read type hints: they must still resolve.
    import typing

    from triact import SessionState
    from triact.transport import SessionArgs

    assert SessionState.__module__ == "triact.sessions"
    hints = typing.get_type_hints(SessionArgs, include_extras=True)
    assert "session_id" in hints
    assert attrs.fields(SessionState).data.type is not None
