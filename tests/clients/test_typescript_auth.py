"""``triact serve --http --tokens`` driven by the official MCP TypeScript SDK clients
(v1, v2, v2 negotiating 2026-07-28), each sending its principal's bearer token as a
header: a wrong token is refused, and one principal cannot reach another's sessions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._node import FLAVOURS, Driver, DriverError, start_http_server, stop_http_server
from ._results import content, error

ALICE = "alice-0123456789abcdefghij"
BOB = "bob-0123456789abcdefghijkl"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of one ``triact serve --http --tokens`` for the module; it must exit 0
    on SIGTERM at the end."""
    tmp = tmp_path_factory.mktemp("http-auth")
    tokens = tmp / "tokens"
    tokens.write_text(f"alice {ALICE}\nbob {BOB}\n")
    tokens.chmod(0o600)
    server, address = start_http_server(tmp, ("--tokens", str(tokens)))
    try:
        yield address
    finally:
        stop_http_server(server, tmp)


def connected(flavour: str, directory: Path, log: Path, url: str, token: str) -> Driver:
    driver = Driver(flavour, directory, log)
    try:
        driver.request("connect", url=url, headers={"Authorization": f"Bearer {token}"})
    except BaseException:
        driver.close()
        raise
    return driver


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_principals_over_http_with_the_typescript_sdk(
    flavour: str, url: str, node_clients: Path, tmp_path: Path
) -> None:
    with pytest.raises(DriverError) as refused:
        connected(flavour, node_clients, tmp_path / "wrong.log", url, ALICE + "x")
    assert "401" in refused.value.message or "nauthorized" in refused.value.message
    assert ALICE not in refused.value.message

    alice = connected(flavour, node_clients, tmp_path / "alice.log", url, ALICE)
    bob = connected(flavour, node_clients, tmp_path / "bob.log", url, BOB)
    try:
        session_id = content(alice.call("session_create", {"topic": "alice's"}))["session_id"]
        update = {"session_id": session_id, "set": {"a": 1}}
        assert content(alice.call("session_update", update))["version"] == 2
        for name, arguments in [
            ("session_get", {}),
            ("session_update", {"set": {"stolen": True}}),
            ("session_end", {}),
        ]:
            failure = error(bob.call(name, {"session_id": session_id, **arguments}))
            assert failure["code"] == "not_found", name
        assert content(bob.call("session_list", {}))["total"] == 0
        listed = content(alice.call("session_list", {}))
        assert session_id in [s["session_id"] for s in listed["sessions"]]
        state = content(alice.call("session_get", {"session_id": session_id}))["session"]
        assert (state["data"], state["version"]) == ({"a": 1}, 2)
        content(alice.call("session_end", {"session_id": session_id}))
        assert alice.request("errors") == []
    finally:
        alice.close()
        bob.close()
