"""triact.aio mirrors triact.sessions by hand; this keeps the two faces from drifting.

Every public member of the Trio face (methods, properties, attributes of live objects)
has a twin of the same name in the asyncio face, with the same parameters (names,
kinds, defaults, annotations), and the bridge's rule for async-ness: a Trio coroutine
method is an asyncio coroutine method, an async context manager stays one, and
everything synchronous stays synchronous. And the asyncio face adds nothing of its own.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import trio

import triact
import triact.aio

from .conftest import RunAio

#: Trio-face members with no asyncio twin, and why.
TRIO_ONLY = {
    ("SessionManager", "store"): "its methods are Trio coroutines, unusable from asyncio",
    ("SessionManager", "now"): "reads Trio's clock, which exists only inside the Trio run",
    ("SessionManager", "leases"): "a shared store's leases: Trio objects, used by its actors",
}

PAIRS = ("Session", "SessionManager", "Subscription")
DUNDERS = {"__aiter__", "__anext__", "__enter__", "__exit__", "__aenter__", "__aexit__"}


def public(names: Iterable[str]) -> set[str]:
    return {n for n in names if not n.startswith("_") or n in DUNDERS}


def members(cls: type, instance: object) -> set[str]:
    """Public names of the class and of a live instance (its slots or its __dict__)."""
    names = public(dir(cls))
    names |= public(getattr(instance, "__dict__", {}))
    for klass in type(instance).__mro__:
        slots = getattr(klass, "__slots__", ())
        names |= public([slots] if isinstance(slots, str) else slots)
    return names


async def trio_objects() -> dict[str, object]:
    async with triact.open_session_manager() as manager:
        session = await manager.create_session()
        with manager.subscribe() as subscription:
            return {"SessionManager": manager, "Session": session, "Subscription": subscription}


async def aio_objects() -> dict[str, object]:
    async with triact.aio.open_session_manager() as manager:
        session = await manager.create_session()
        with manager.subscribe() as subscription:
            return {"SessionManager": manager, "Session": session, "Subscription": subscription}


@pytest.fixture(scope="module")
def live() -> dict[str, tuple[object, object]]:
    """A live object of each class in each face (closed by now: only looked at)."""
    trio_side = trio.run(trio_objects)
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        aio_side = runner.run(aio_objects())
    return {name: (trio_side[name], aio_side[name]) for name in PAIRS}


def kind(member: object) -> str:
    """How a member is called: as the bridge maps it."""
    if isinstance(member, property):
        return "property"
    if not callable(member):
        return "attribute"
    function = inspect.unwrap(member)  # type: ignore[arg-type]
    if inspect.isasyncgenfunction(function):
        return "async context manager"  # @asynccontextmanager
    if inspect.iscoroutinefunction(function):
        return "coroutine"
    return "sync"


def parameters(function: Callable[..., Any]) -> list[tuple[str, object, object, object]]:
    signature = inspect.signature(function)
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in signature.parameters.values()
        if p.name != "self"
    ]


@pytest.mark.parametrize("name", PAIRS)
def test_each_class_has_the_same_public_members_in_both_faces(
    live: dict[str, tuple[object, object]], name: str
) -> None:
    trio_cls, aio_cls = getattr(triact, name), getattr(triact.aio, name)
    trio_obj, aio_obj = live[name]
    trio_names = members(trio_cls, trio_obj) - {m for c, m in TRIO_ONLY if c == name}
    aio_names = members(aio_cls, aio_obj)
    assert sorted(trio_names - aio_names) == [], f"missing from triact.aio.{name}"
    assert sorted(aio_names - trio_names) == [], f"only in triact.aio.{name}"


def twins() -> list[tuple[str, str]]:
    found = []
    for name in PAIRS:
        for member in sorted(public(vars(getattr(triact, name)))):
            if callable(getattr(getattr(triact, name), member)) or isinstance(
                inspect.getattr_static(getattr(triact, name), member), property
            ):
                found.append((name, member))
    return found


@pytest.mark.parametrize(("name", "member"), twins())
def test_each_method_has_the_same_signature_and_async_ness(name: str, member: str) -> None:
    trio_member = inspect.getattr_static(getattr(triact, name), member)
    aio_member = inspect.getattr_static(getattr(triact.aio, name), member)
    assert kind(aio_member) == kind(trio_member)
    if callable(trio_member):
        assert parameters(aio_member) == parameters(trio_member)


def test_open_session_manager_has_the_same_signature_in_both_faces() -> None:
    assert kind(triact.aio.open_session_manager) == kind(triact.open_session_manager)
    assert kind(triact.open_session_manager) == "async context manager"
    assert parameters(triact.aio.open_session_manager) == parameters(triact.open_session_manager)


def test_the_asyncio_face_exports_a_twin_of_each_trio_name_it_mirrors() -> None:
    mirrored = set(triact.aio.__all__) - {"open_asyncio_bridge", "run_asyncio"}
    assert mirrored == {*PAIRS, "open_session_manager"}
    assert mirrored <= set(triact.sessions.__all__)


def test_an_authorized_asyncio_handle_checks_its_token(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session(bind_client=True)
            good = session.authorized(session.token, "a_tool")
            assert isinstance(good, triact.aio.Session)
            assert (await good.snapshot()).version == 1
            with pytest.raises(triact.SessionSecurityError):
                await session.authorized("wrong", "b_tool").snapshot()
            state = await good.snapshot()
            assert [(e.kind, e.tool_name) for e in state.security_events] == [
                ("invalid_token", "b_tool")
            ]

    aio_run(main)
