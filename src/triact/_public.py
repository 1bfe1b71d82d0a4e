"""Public names report the package that offers them (trio's ``fixup_module_metadata``
habit), so that reprs, tracebacks and docs say ``triact.sessions.SessionError``, not
the private module that happens to define it."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable, Mapping
from typing import Any


def fixup_module_metadata(
    module_name: str, namespace: Mapping[str, Any], names: Iterable[str]
) -> None:
    """Set ``__module__`` to ``module_name`` for each class and function of ``names``
    (in ``namespace``) that a private module of triact defines; a name already claimed
    by a public package keeps it.

    A class's own annotations are resolved first, in the module that defines them:
    typing.get_type_hints looks names up in the module ``__module__`` names, which is
    no longer that one.
    """
    for name in names:
        obj = namespace.get(name)  # None: a name the package imports on first use
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        module = getattr(obj, "__module__", "")
        if not module.startswith("triact.") or not _private(module):
            continue
        if inspect.isclass(obj):
            _resolve_annotations(obj)
        obj.__module__ = module_name


def _private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def _resolve_annotations(cls: type) -> None:
    own = inspect.get_annotations(cls)
    if not own or not any(isinstance(value, str) for value in own.values()):
        return
    hints = typing.get_type_hints(cls, include_extras=True)
    cls.__annotations__ = {field: hints[field] for field in own}
