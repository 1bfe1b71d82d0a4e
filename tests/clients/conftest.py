"""A TypeScript SDK client connected to a ``triact serve`` of its own, per test module
and client flavour (so one Node process and one server per module and flavour)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._node import FLAVOURS, Driver, installed_clients


@pytest.fixture(scope="session")
def node_clients() -> Path:
    return installed_clients()


@pytest.fixture(scope="module", params=FLAVOURS)
def client(
    request: pytest.FixtureRequest, node_clients: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Driver]:
    """A connected client of ``triact serve --store memory`` (and the options a module
    names in ``SERVE_ARGS``)."""
    tmp = tmp_path_factory.mktemp(f"client-{request.param}")
    driver = Driver(request.param, node_clients, tmp / "driver.log")
    driver.tmp = tmp  # type: ignore[attr-defined]
    try:
        args = getattr(request.module, "SERVE_ARGS", ())
        driver.connect(tmp, "--store", "memory", *args)
        yield driver
    finally:
        driver.close()
