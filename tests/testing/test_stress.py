"""``triact stress``: a short real-time load finds nothing wrong with a correct
manager, and a broken target gives violations and exit code 1."""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal, cast

import pytest
import trio

from triact.sessions import SessionManager
from triact.testing._display import Display
from triact.testing._history import Call
from triact.testing._http import HttpTarget
from triact.testing._model import DataChange
from triact.testing._spread import SpreadTarget, open_servers
from triact.testing._stress import (
    StressOptions,
    add_stress_parser,
    options_from_args,
    run_stress,
    stress,
)
from triact.testing._targets import (
    InprocTarget,
    StdioServerError,
    StdioTarget,
    StressTarget,
    open_inproc,
)

from .._redis import RedisPlace


async def test_a_short_inproc_run_checks_out() -> None:
    report = await stress(StressOptions(duration=2.0, seed=5))
    assert report.operations > 1000
    assert report.violations == []
    assert report.unexpected == []
    assert report.outcomes["ok"] > report.operations // 2
    assert report.percentile(0.5) <= report.percentile(0.99)
    # Stale expected_versions provoke conflicts: expected outcomes, not errors.
    assert report.expected["conflict"] > 0
    assert report.expected["conflict"] == report.outcomes["conflict"]
    assert dict(report.rows())["errors by kind"] == "none"


async def test_run_stress_prints_a_summary_and_exits_0() -> None:
    out, err = io.StringIO(), io.StringIO()
    options = StressOptions(sessions=4, clients=4, duration=1.5, store="sqlite", seed=3)
    assert await run_stress(options, out=out, err=err) == 0
    summary = out.getvalue()
    assert "in-process manager, sqlite store; 4 sessions, 4 clients" in summary
    for row in (
        "operations",
        "throughput",
        "latency p50 / p99",
        "expected outcomes",
        "errors by kind        none",
        "faults injected",
        "invariant violations  0",
    ):
        assert row in summary, summary
    # plain progress lines, about once a second (when exactly depends on the load)
    assert re.search(r"triact stress: \d\.\d/1\.5 s  [\d,]+ ops", err.getvalue()), err.getvalue()


class LossyTarget(InprocTarget):
    """Acknowledges every tenth update without committing it: a lost update."""

    updates = 0

    async def update(
        self,
        call: Call,
        session_id: str,
        change: DataChange,
        expected_version: int | None,
        *,
        fails: bool,
        slow: float,
    ) -> None:
        self.updates += 1
        if self.updates % 10 or fails:
            await super().update(call, session_id, change, expected_version, fails=fails, slow=slow)
            return
        state = await self.handles[session_id].snapshot()
        call.ok_version(state.version + 1, change.apply(state.data))


async def test_a_broken_target_gives_violations_and_exit_code_1() -> None:
    @asynccontextmanager
    async def lossy() -> AsyncIterator[StressTarget]:
        async with open_inproc("memory", 0.0, 0) as target:
            yield LossyTarget(target.manager, None)

    out = io.StringIO()
    options = StressOptions(sessions=2, clients=4, duration=1.0, seed=1)
    assert await run_stress(options, target=lossy, out=out, err=io.StringIO()) == 1
    summary = out.getvalue()
    assert "invariant violations  0" not in summary
    assert "I1/I3" in summary or "I3 versioned" in summary


class ForgetfulTarget(InprocTarget):
    """Loses the update that sets the label of every other session it creates (as a
    node killed under it would: outcome unknown, nothing committed), and records
    which sessions were sent failing updates."""

    labels = 0

    def __init__(self, manager: SessionManager) -> None:
        super().__init__(manager, None)
        self.unlabelled: set[str] = set()
        self.failing: list[str] = []

    async def update(
        self,
        call: Call,
        session_id: str,
        change: DataChange,
        expected_version: int | None,
        *,
        fails: bool,
        slow: float,
    ) -> None:
        if "label" in change.arguments().get("set", {}):
            self.labels += 1
            if self.labels % 2:
                self.unlabelled.add(session_id)
                call.failed("unknown", "the node went away")
                return
        if fails:
            self.failing.append(session_id)
        await super().update(call, session_id, change, expected_version, fails=fails, slow=slow)


async def test_failing_updates_go_only_to_sessions_whose_label_was_set() -> None:
    # A failing update increments the label, which holds a string; on a session
    # whose label update was lost it would succeed, and commit a change its record
    # does not name (the checker then saw data it could not explain).
    targets: list[ForgetfulTarget] = []

    @asynccontextmanager
    async def forgetful() -> AsyncIterator[StressTarget]:
        async with open_inproc("memory", 0.0, 0) as target:
            targets.append(ForgetfulTarget(target.manager))
            yield targets[0]

    options = StressOptions(sessions=4, clients=4, duration=1.0, faults=0.3, seed=2)
    report = await stress(options, target=forgetful)
    (target,) = targets
    assert target.unlabelled, "no label update was lost"
    assert target.failing, "no failing update was sent"
    assert not set(target.failing) & target.unlabelled
    assert report.violations == []


def _server_available() -> bool:
    try:
        from triact._serve import run_serve  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _server_available(), reason="triact serve is not built yet")
async def test_a_short_stdio_run_against_triact_serve_checks_out() -> None:
    options = StressOptions(sessions=4, clients=4, duration=1.5, target="stdio", faults=0.1, seed=2)
    report = await stress(options)
    assert report.operations > 100
    assert report.violations == []
    assert report.unexpected == []
    assert report.outcomes["raised"] > 0  # failing updates, refused by the server


def test_the_stress_parser() -> None:
    parser = argparse.ArgumentParser(prog="triact")
    add_stress_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "stress",
            "--sessions",
            "3",
            "--store",
            "sqlite:/tmp/x.db",
            "--faults",
            "0.1",
            "--target",
            "stdio",
            "--seed",
            "9",
            "--server-command",
            "triact serve --store memory",
            "--processes",
            "2",
        ]
    )
    assert options_from_args(args) == StressOptions(
        sessions=3,
        store="sqlite:/tmp/x.db",
        faults=0.1,
        target="stdio",
        seed=9,
        server_command=("triact", "serve", "--store", "memory"),
        processes=2,
    )
    for bad in (["--store", "redis"], ["--faults", "0.9"], ["--clients", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["stress", *bad])


@pytest.mark.parametrize(
    ("target", "store", "needs"),
    [
        ("stdio", "memory", "--store sqlite[:PATH] or redis://... (got memory)"),
        ("inproc", "sqlite", "--target stdio or http (got inproc)"),
    ],
)
def test_several_processes_need_the_stdio_target_on_a_shared_store(
    target: Literal["inproc", "stdio", "http"], store: str, needs: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(needs)):
        StressOptions(target=target, store=store, processes=3)
    with pytest.raises(ValueError, match="--processes must be >= 1"):
        StressOptions(processes=0)
    assert StressOptions(target="stdio", store="sqlite:/tmp/x.db", processes=3).processes == 3
    redis = StressOptions(target="stdio", store="redis://127.0.0.1:6379/0", processes=3)
    assert redis.processes == 3
    assert StressOptions(target="http", store="sqlite:/tmp/x.db", processes=3).processes == 3


@pytest.mark.skipif(not _server_available(), reason="triact serve is not built yet")
async def test_a_short_run_over_two_serve_processes_checks_out() -> None:
    options = StressOptions(
        sessions=4, clients=4, duration=1.5, target="stdio", store="sqlite", processes=2, seed=4
    )
    report = await stress(options)
    assert report.violations == []
    assert report.unexpected == []
    assert len(report.calls_by_process) == 2
    assert min(report.calls_by_process) > 0
    assert sum(report.calls_by_process) == report.operations
    assert dict(report.rows())["calls by process"].startswith("#1 ")


async def test_the_live_display_draws_with_rich() -> None:
    options = StressOptions(duration=0.5, seed=1)
    err, out = io.StringIO(), io.StringIO()
    display = Display(options, out, err, live=True)
    report = await stress(options, progress=display.progress)
    display.stop()
    display.summary(report)
    assert "triact stress" in err.getvalue()
    assert "invariant violations  0" in out.getvalue()


def test_triact_testing_works_without_hypothesis_except_for_its_strategies() -> None:
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import triact.testing as t\n"
        "t.HistoryRecorder(); t.ReferenceModel(); t.check_history(t.History([]))\n"
        "try:\n"
        "    t.session_states\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install 'hypothesis>=6.100'" in result.stdout


async def test_a_short_http_run_against_triact_serve_checks_out() -> None:
    # Failing updates too: the server refuses them as tool errors over HTTP as well.
    options = StressOptions(sessions=4, clients=6, duration=1.5, target="http", faults=0.1, seed=2)
    report = await stress(options)
    assert report.violations == []
    assert report.unexpected == []
    assert report.operations > 50
    assert report.outcomes["raised"] > 0
    assert report.expected["conflict"] > 0
    # six MCP clients: three of each protocol era, each call to one at random
    assert "(6 clients, protocols 2025-11-25 and 2026-07-28)" in report.description


async def test_a_short_http_run_over_two_serve_processes_checks_out() -> None:
    through: list[int] = []

    @asynccontextmanager
    async def servers() -> AsyncIterator[StressTarget]:
        async with open_servers("sqlite", 2, None, 4, "http", 4) as spread:
            yield spread
            assert isinstance(spread, SpreadTarget)
            for target in spread.targets:
                assert isinstance(target, HttpTarget)
                through.extend(c.answered for c in target.mixed.clients if not c.owner)

    options = StressOptions(
        sessions=4, clients=4, duration=1.5, target="http", store="sqlite", processes=2, seed=4
    )
    report = await stress(options, target=servers)
    assert report.violations == []
    assert report.unexpected == []
    assert report.description.startswith(
        "2 triact serve processes on one SQLite file over http, each call to one at random "
        "(MCP sessions too)"
    )
    assert len(report.calls_by_process) == 2
    assert min(report.calls_by_process) > 0
    assert sum(report.calls_by_process) == report.operations
    # Each process served the MCP session the other's handshake client opened.
    assert len(through) == 2
    assert min(through) > 0
    # Their default sessions were updated through both, and each had one.
    assert report.mcp_sessions == 2
    assert report.default_updates > 0


async def test_a_short_http_run_over_three_serve_processes_on_redis_checks_out(
    redis_place: RedisPlace,
) -> None:
    """Three HTTP nodes on one Redis, each call to a random node: 2025-11-25 clients'
    Mcp-Session-Id records live in Redis, so every node serves every client."""
    options = StressOptions(
        sessions=4,
        clients=6,
        duration=1.5,
        target="http",
        store=f"{redis_place.url}?prefix={redis_place.prefix}",
        processes=3,
        seed=5,
    )
    report = await stress(options)
    assert report.violations == []
    assert report.unexpected == []
    assert report.description.startswith("3 triact serve processes on one Redis over http")
    assert report.mcp_sessions == 3
    assert report.default_updates > 0
    assert min(report.calls_by_process) > 0
    assert sum(report.calls_by_process) == report.operations


async def test_an_http_server_that_does_not_start_is_exit_code_2() -> None:
    out, err = io.StringIO(), io.StringIO()
    # A server that exits at once, having said why on stderr: its words are shown.
    command = (sys.executable, "-c", "import sys; sys.exit('no port for you')")
    options = StressOptions(duration=1.0, target="http", server_command=command, seed=1)
    assert await run_stress(options, out=out, err=err) == 2
    assert "the server exited" in err.getvalue()
    assert "no port for you" in err.getvalue()
    assert out.getvalue() == ""


async def test_a_target_failing_deep_in_nurseries_is_said_in_one_line() -> None:
    # A cluster node that could not be restarted mid-run fails in a nursery inside the
    # fault injector's: the error said "Exceptions from Trio nursery (1 sub-exception)".
    async def restart() -> None:
        await trio.sleep(0.2)  # into the load
        raise StdioServerError("the server exited: it was told so")

    @asynccontextmanager
    async def failing() -> AsyncIterator[StressTarget]:
        # Two nurseries deep, as a cluster node's restart is (the cluster's, the
        # fault injector's).
        async with open_inproc("memory", 0.0, 0) as target, trio.open_nursery() as cluster:
            cluster.start_soon(trio.sleep_forever)
            async with trio.open_nursery() as faults:
                faults.start_soon(restart)
                yield target
            cluster.cancel_scope.cancel()

    out, err = io.StringIO(), io.StringIO()
    options = StressOptions(sessions=2, clients=2, duration=5.0, seed=1)
    assert await run_stress(options, target=failing, out=out, err=err) == 2
    assert err.getvalue() == "triact stress: error: the server exited: it was told so\n"
    assert out.getvalue() == ""


@pytest.mark.parametrize("target", ["stdio", "http"])
async def test_a_redis_password_reaches_the_server_in_its_environment(
    target: Literal["stdio", "http"],
) -> None:
    # Not on its command line, which every user of the machine can read (ps), nor in
    # an error quoting that command. The server here says what it got, and exits.
    said = "import os, sys; sys.exit(f'{sys.argv[1:]} {os.environ[\"TRIACT_REDIS_PASSWORD\"]}')"
    url = "redis://:s3cr%2Ft@127.0.0.1:1/0?prefix=p"
    command = (sys.executable, "-c", said, "--store", url)
    options = StressOptions(duration=1.0, target=target, server_command=command, seed=1)
    err = io.StringIO()
    assert await run_stress(options, out=io.StringIO(), err=err) == 2
    shown = err.getvalue()
    assert "['--store', 'redis://127.0.0.1:1/0?prefix=p'" in shown
    assert "] s3cr/t" in shown  # (its environment, printed by the server itself)
    assert "s3cr%2Ft" not in shown


_NOT_MCP = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(f"at http://127.0.0.1:{server.server_port}/mcp", file=sys.stderr, flush=True)
server.serve_forever()
"""


async def test_an_http_server_that_is_not_mcp_is_exit_code_2() -> None:
    out, err = io.StringIO(), io.StringIO()
    options = StressOptions(
        duration=1.0, target="http", server_command=(sys.executable, "-c", _NOT_MCP), seed=1
    )
    assert await run_stress(options, out=out, err=err) == 2
    assert "initialize: HTTP 200, not a JSON-RPC answer: '<html>hello</html>'" in err.getvalue()


async def test_the_http_target_without_h11_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "h11", None)  # import fails
    out, err = io.StringIO(), io.StringIO()
    assert await run_stress(StressOptions(target="http", seed=1), out=out, err=err) == 2
    assert "--target http needs h11" in err.getvalue()
    assert "pip install '.[http]'" in err.getvalue()


def test_affinity_sends_each_sessions_calls_to_the_server_its_id_hashes_to() -> None:
    servers = [f"server {i}" for i in range(3)]
    spread = SpreadTarget(cast(list[StdioTarget], servers), seed=1, routing="affinity")
    spread.arm(True)
    ids = [f"session-{i}" for i in range(30)]
    chosen = {sid: spread._pick(sid) for sid in ids}
    assert all(spread._pick(sid) == chosen[sid] for sid in ids for _ in range(3))
    assert set(chosen.values()) == set(servers)  # spread over all of them
    unnamed = {spread._pick() for _ in range(50)}  # session_create names none: random
    assert unnamed == set(servers)
    assert sum(spread.calls) == 30 * 4 + 50
    assert "each session's calls to the one its id hashes to" in spread.description


def test_affinity_needs_several_servers_and_the_parser_takes_it() -> None:
    with pytest.raises(ValueError, match="--routing affinity spreads calls over several"):
        StressOptions(target="stdio", store="sqlite", routing="affinity")
    with pytest.raises(ValueError, match="--routing is random or affinity"):
        StressOptions(target="stdio", store="sqlite", processes=2, routing="sticky")  # type: ignore[arg-type]
    parser = argparse.ArgumentParser(prog="triact")
    add_stress_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "stress",
            "--target",
            "stdio",
            "--processes",
            "2",
            "--store",
            "sqlite",
            "--routing",
            "affinity",
        ]
    )
    assert options_from_args(args).routing == "affinity"


async def test_a_short_run_over_two_serve_processes_with_affinity_checks_out() -> None:
    options = StressOptions(
        sessions=4,
        clients=4,
        duration=1.5,
        target="stdio",
        store="sqlite",
        processes=2,
        seed=4,
        routing="affinity",
    )
    report = await stress(options)
    assert report.violations == []
    assert report.unexpected == []
    assert sum(report.calls_by_process) == report.operations
    assert min(report.calls_by_process) > 0
    assert "each session's calls to the one its id hashes to" in report.description


class TwoDefaultsTarget(InprocTarget):
    """A target over two MCP sessions whose default sessions live in a manager; with
    ``split``, the second MCP session's updates go to a new default session every
    other time (as two processes that each made one would answer), else each MCP
    session has one. ``lose`` acknowledges every fifth default update without
    committing it."""

    def __init__(self, manager: SessionManager, *, split: bool, lose: bool = False) -> None:
        super().__init__(manager, None)
        self.split = split
        self.lose = lose
        self.calls = 0
        self.made: dict[str, list[str]] = {}

    def mcp_sessions(self) -> list[str]:
        return ["mcp-one", "mcp-two"]

    async def update_default(self, call: Call, mcp_session: str, change: DataChange) -> None:
        self.calls += 1
        made = self.made.setdefault(mcp_session, [])
        split = self.split and mcp_session == "mcp-two"
        if not made or (split and self.calls % 2):
            created = await self.manager.create_session("default")
            if not made or split:  # (else another call made it meanwhile)
                made.append(created.id)
        session = await self.manager.get_session(made[-1])
        state = await session.snapshot()
        if self.lose and self.calls % 5 == 0:
            call.ok_version(state.version + 1, change.apply(state.data), session.id)
            return
        new = await session.update(lambda s: s.with_data(change.apply(s.data)))
        call.ok_version(new.version, new.data, session.id)


async def run_with_defaults(**target: bool) -> tuple[str, list[object]]:
    @asynccontextmanager
    async def defaults() -> AsyncIterator[StressTarget]:
        async with open_inproc("memory", 0.0, 0) as inproc:
            yield TwoDefaultsTarget(inproc.manager, **target)

    out = io.StringIO()
    options = StressOptions(sessions=2, clients=4, duration=1.0, seed=3)
    await run_stress(options, target=defaults, out=out, err=io.StringIO())
    report = await stress(options, target=defaults)
    return out.getvalue(), list(report.violations)


async def test_default_session_updates_are_made_and_checked() -> None:
    summary, violations = await run_with_defaults(split=False)
    assert violations == []
    assert "invariant violations  0" in summary
    assert re.search(r"default sessions +[\d,]+ updates in 2 MCP sessions", summary), summary


async def test_an_mcp_session_answered_from_two_default_sessions_is_a_violation() -> None:
    summary, violations = await run_with_defaults(split=True)
    assert [v.invariant for v in violations] == ["one default session per MCP session"]
    assert "MCP session mcp-tw... was answered from" in summary


async def test_a_default_session_update_that_was_lost_is_a_violation() -> None:
    # The checker sees the default sessions' updates as their sessions' (named from
    # the answers), so a lost one shows.
    _, violations = await run_with_defaults(split=False, lose=True)
    assert violations
    assert all(v.invariant != "one default session per MCP session" for v in violations)
