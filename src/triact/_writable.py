"""Frozen attrs instances made without their ``__init__``: as an instance of a
writable twin, then given the class itself. The session layer's states and the
transport's tool arguments and results are made so. A leaf: it imports nothing of
triact, so that every layer may use it."""

from __future__ import annotations

from typing import Any

_twins: dict[type[Any], type[Any]] = {}


def writable_twin(cls: type[Any]) -> type[Any]:
    """A subclass of the slotted, frozen ``cls`` with the same slots and plain
    attribute writes (the same one for every call with ``cls``).

    ``new = writable_twin(cls)()`` (or ``object.__new__(writable_twin(cls))``; the
    twin's ``__new__`` and ``__init__`` are ``object``'s, unless ``cls`` has a
    ``__new__`` of its own), then ``new.field = value`` for each
    field, then ``new.__class__ = cls`` (allowed: the twin adds nothing to the layout)
    makes what ``cls(...)`` would, where its ``__init__`` only sets each slot: a frozen
    class's sets each one through ``object.__setattr__``, and a slot's descriptor
    ``__set__`` called directly builds an argument tuple per field; a write to a twin's
    attribute goes straight into the slot (CPython specialises it: both attribute
    hooks are ``object``'s). Nothing outside the function that makes an instance
    ever sees a twin."""
    twin = _twins.get(cls)
    if twin is None:
        namespace = {
            "__slots__": (),
            "__setattr__": object.__setattr__,
            "__delattr__": object.__delattr__,
            # twin() makes an empty one, in C (cheaper than object.__new__(twin),
            # which checks its argument against the type: about 300 instructions).
            "__init__": object.__init__,
            "__module__": cls.__module__,
        }
        twin = _twins[cls] = type(f"_Writable{cls.__name__}", (cls,), namespace)
    return twin
