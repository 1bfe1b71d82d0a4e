"""The ``triact`` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import triact
from triact import _demo

from ._redis import RedisPlace
from ._serving import serving
from .transport._sdk import SERVE_TOOL_NAMES


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triact.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"triact {triact.__version__}"


def test_help_lists_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_demo_drives_the_server_as_an_mcp_client() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "$ python -m triact serve --store memory"
    assert "-> initialize (protocol 2025-11-25)" in lines
    capabilities = "capabilities: tools, logging, prompts"
    assert f"<- triact {triact.__version__}, protocol 2025-11-25, {capabilities}" in lines
    listed = next(line for line in lines if line.startswith("<- ") and " tools: " in line)
    for tool in SERVE_TOOL_NAMES:
        assert tool in listed
    created = next(line for line in lines if line.startswith("<- session "))
    session_id = created.split()[2].rstrip(",")
    assert created == f"<- session {session_id}, version 1"
    steps = [
        '-> session_update {"set": {"draft": "intro"}}',
        '<- version 2, data {"draft": "intro"}',
        '-> session_update {"increment": {"edits": 1}, "expected_version": 2}',
        '<- version 3, data {"draft": "intro", "edits": 1}',
        '-> session_update {"set": {"draft": "lost?"}, "expected_version": 2}',
        f"<- conflict: session {session_id!r} is at version 3, not 2; read it again and retry "
        "against the current version",
        "   (expected_version 2 was stale: nothing changed)",
        '-> session_update {"increment": {"edits": 1}} x 10, sent at once',
        "<- versions 4, 5, 6, 7, 8, 9, 10, 11, 12, 13: one at a time, in the order sent",
        "-> session_get",
        '<- version 13, data {"draft": "intro", "edits": 11}',
        "-> session_stats",
    ]
    start = lines.index(steps[0])
    assert lines[start : start + len(steps)] == steps
    assert lines[start + len(steps)].startswith("<- session: ")
    assert "store memory" in lines[start + len(steps)]
    assert lines[start + len(steps) + 1 :] == [
        "-> session_end",
        "<- ended: True, final version 13",
        "-> session_get",
        f"<- not_found: no session {session_id!r}: it never existed, or it expired, ended or "
        "was removed; create a new one",
        "   the server stopped at end of input, exit status 0",
    ]


async def test_demo_reports_a_server_that_dies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_demo, "SERVE", (sys.executable, "-c", "pass"))
    assert await _demo.demo() == 1
    assert "demo failed: " in capsys.readouterr().err


def test_help_lists_serve() -> None:
    result = run("--help")
    assert "serve" in result.stdout


def test_serve_help_lists_its_options() -> None:
    result = run("serve", "--help")
    assert result.returncode == 0
    for option in (
        "--store",
        "--idle-ttl",
        "--max-sessions",
        "--log-level",
        "--max-line-bytes",
        "--max-state-bytes",
        "--secret-key-file",
        "--shutdown-grace",
        "--allowed-root",
        "--allow-git-hooks",
        "--git-timeout",
        "--max-reflections-per-project",
        "--max-reflection-chars",
        "--max-conversations-per-project",
        "--semantic",
        "--recency-weight",
        "--recency-half-life",
    ):
        assert option in result.stdout


def test_serve_refuses_an_unknown_store() -> None:
    result = run("serve", "--store", "postgres://nope")
    assert result.returncode == 2
    assert "--store must be 'memory', 'sqlite', 'sqlite:PATH' or a redis://" in result.stderr
    assert result.stdout == ""


def test_serve_refuses_a_bad_key_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("not hex")
    result = run("serve", "--store", "memory", "--secret-key-file", str(key))
    assert result.returncode == 2
    assert "must hold at least 16 bytes as hex" in result.stderr


def test_serve_refuses_a_zero_line_bound() -> None:
    result = run("serve", "--max-line-bytes", "0")
    assert result.returncode == 2
    assert "must be >= 1" in result.stderr


def test_serve_refuses_a_relative_allowed_root() -> None:
    result = run("serve", "--store", "memory", "--allowed-root", "projects")
    assert result.returncode == 2
    assert "argument --allowed-root: must be an absolute path, got 'projects'" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--recency-weight", "1.5"], "recency_weight must be a number from 0 to 1, got 1.5"),
        (["--recency-half-life", "0"], "argument --recency-half-life"),
        (["--semantic", "maybe"], "argument --semantic: invalid choice: 'maybe'"),
    ],
)
def test_serve_refuses_bad_search_options(options: list[str], says: str) -> None:
    result = run("serve", "--store", "memory", *options)
    assert result.returncode == 2
    assert says in result.stderr
    assert result.stdout == ""


def test_serve_semantic_on_without_the_extra_stops_with_a_clear_error(tmp_path: Path) -> None:
    # The extra looks missing to this process (it may be installed here).
    script = (
        "import sys, triact.work._work as work\n"
        "work.semantic_installed = lambda: False\n"
        "from triact.cli import main\n"
        "sys.exit(main(['serve', '--store', 'memory', '--semantic', 'on']))\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert "needs triact's semantic extra" in done.stderr
    assert done.stdout == ""


def test_serve_passes_the_work_options_to_the_work_tools(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "project").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    options = ["--allowed-root", str(allowed), "--max-reflections-per-project", "2"]
    # Words alone (docs/testing.md): with the semantic extra, the model would be loaded.
    with serving(*options, "--max-reflection-chars", "10", "--semantic", "off") as call:
        outside = call("session_start", {"working_directory": str(tmp_path / "elsewhere")})
        assert outside["_meta"]["triact/error"]["code"] == "invalid_arguments"
        assert "outside the allowed roots" in outside["_meta"]["triact/error"]["message"]
        # Checked when set, too, and worded alike whether the directory exists or not.
        for path in (tmp_path / "elsewhere", tmp_path / "nowhere"):
            created = call("session_create", {"working_directory": str(path)})
            error = created["_meta"]["triact/error"]
            assert error["code"] == "invalid_arguments"
            assert error["message"] == (
                f"working_directory {str(path)!r} is outside the allowed roots of this "
                "server (triact serve --allowed-root); use a directory inside one of them"
            )
        assert (
            call("session_start", {"working_directory": str(allowed / "project")})["isError"]
            is False
        )
        for i in range(3):
            stored = call("reflection_store", {"content": f"note {i}", "tags": [], "project": "p"})
            assert stored["isError"] is False
        found = call("reflection_search", {"query": "note", "project": "p"})["structuredContent"]
        assert sorted(hit["content"] for hit in found["results"]) == ["note 1", "note 2"]
        too_long = call("reflection_store", {"content": "x" * 11, "tags": [], "project": "p"})
        assert too_long["_meta"]["triact/error"]["code"] == "invalid_arguments"
        long_query = call("reflection_search", {"query": "note " * 401, "project": "p"})
        error = long_query["_meta"]["triact/error"]
        assert error["code"] == "invalid_arguments"
        assert error["message"] == (
            "a query has at most 2000 characters (WorkConfig.max_query_chars), got 2005"
        )


@pytest.mark.parametrize("allowed", [False, True])
def test_serve_runs_git_hooks_only_with_allow_git_hooks(tmp_path: Path, allowed: bool) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for command in (["init", "-q", "-b", "main"], ["config", "user.name", "T"]):
        subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True)
    subprocess.run(["git", "config", "user.email", "t@x"], cwd=repo, check=True)
    (repo / "a.txt").write_text("a\n")
    marker = tmp_path / "hook-ran"
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch '{marker}'\n")
    hook.chmod(0o755)
    with serving(*(["--allow-git-hooks"] if allowed else [])) as call:
        started = call("session_start", {"working_directory": str(repo)})["structuredContent"]
        arguments = {"session_id": started["session_id"], "commit": True}
        point = call("session_checkpoint", arguments)["structuredContent"]["checkpoint"]
        assert point["commit"] is not None
    assert marker.exists() is allowed


def test_serve_exits_0_at_end_of_input_and_writes_only_json(tmp_path: Path) -> None:
    request = (
        '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
        '"2025-06-18","capabilities":{},"clientInfo":{"name":"cli","version":"0"}}}\n'
        '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"health_check"}}\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "triact.cli", "serve", "--log-level", "debug"],
        input=request,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    responses = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in responses] == [1, 2]
    assert responses[1]["result"]["structuredContent"]["store"] == "sqlite"
    assert "end of input" in result.stderr
    assert (tmp_path / "triact" / "sessions.db").exists()


@pytest.mark.parametrize("target", ["inproc", "stdio", "http"])
def test_stress_runs_a_short_load_and_finds_no_violation(target: str) -> None:
    result = run(
        "stress", "--duration", "1", "--sessions", "4", "--clients", "8", "--target", target
    )
    assert result.returncode == 0, result.stderr
    violations = re.search(r"invariant violations\s+(\d+)", result.stdout)
    operations = re.search(r"operations\s+([\d,]+)", result.stdout)
    assert violations is not None, result.stdout
    assert operations is not None, result.stdout
    assert violations.group(1) == "0"
    assert int(operations.group(1).replace(",", "")) > 0


def _summary_count(name: str, stdout: str) -> int:
    found = re.search(rf"{name}\s+([\d,]+)", stdout)
    assert found is not None, stdout
    return int(found.group(1).replace(",", ""))


@pytest.mark.parametrize("processes", [2, 3])
def test_stress_spreads_its_calls_over_several_serve_processes_on_one_file(
    tmp_path: Path, processes: int
) -> None:
    # 2: a given file; 3: a bare "sqlite", a temporary file removed at the end.
    store = f"sqlite:{tmp_path / 'shared.db'}" if processes == 2 else "sqlite"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    command = [sys.executable, "-m", "triact.cli", "stress", "--target", "stdio"]
    load = ["--duration", "2", "--sessions", "4", "--clients", "8", "--seed", "7"]
    result = subprocess.run(
        [*command, "--processes", str(processes), "--store", store, *load],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert f"{processes} triact serve processes on one SQLite file" in result.stdout
    assert _summary_count("invariant violations", result.stdout) == 0
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"errors by kind\s+none", result.stdout), result.stdout
    row = re.search(r"calls by process\s+(.*)", result.stdout)
    assert row is not None, result.stdout
    calls = {
        name: int(count.replace(",", ""))
        for name, count in re.findall(r"(#\d+) ([\d,]+)", row.group(1))
    }
    # every process took calls, and they are all the calls the history holds
    assert sorted(calls) == [f"#{i}" for i in range(1, processes + 1)]
    assert min(calls.values()) > 0, calls
    assert sum(calls.values()) == _summary_count("operations", result.stdout)
    if processes == 2:
        assert (tmp_path / "shared.db").exists()
    assert list(scratch.iterdir()) == []  # the temporary store went with the run


def test_stress_spreads_its_calls_over_serve_processes_on_one_redis(
    tmp_path: Path, redis_place: RedisPlace
) -> None:
    store = f"{redis_place.url}?prefix={redis_place.prefix}"
    command = [sys.executable, "-m", "triact.cli", "stress", "--target", "stdio"]
    load = ["--duration", "2", "--sessions", "4", "--clients", "8", "--seed", "7"]
    result = subprocess.run(
        [*command, "--processes", "2", "--store", store, *load],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")},
    )
    assert "2 triact serve processes on one Redis" in result.stdout
    assert _summary_count("invariant violations", result.stdout) == 0
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"errors by kind\s+none", result.stdout), result.stdout
    with redis_place.client() as client:  # the run's sessions are in Redis, as given
        assert client.zcard(f"{redis_place.prefix}order") > 0


@pytest.mark.parametrize(
    ("options", "needs"),
    [
        (["--target", "stdio"], "needs --store sqlite[:PATH] or redis://... (got memory)"),
        (["--store", "sqlite"], "needs --target stdio or http (got inproc)"),
    ],
)
def test_stress_with_several_processes_needs_stdio_and_sqlite(
    options: list[str], needs: str
) -> None:
    result = run("stress", "--processes", "2", *options)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("triact stress: error: --processes 2 ")
    assert needs in lines[0]


def test_stress_refuses_a_bad_option() -> None:
    result = run("stress", "--sessions", "0")
    assert result.returncode == 2
    assert "--sessions" in result.stderr
    result = run("stress", "--processes", "0")
    assert result.returncode == 2
    assert "--processes: must be >= 1" in result.stderr


def test_serve_takes_the_library_defaults() -> None:
    from triact._serve import ServeConfig
    from triact.transport import ServerOptions
    from triact.work import WorkConfig

    config, _ = ServeConfig(store="memory").session_config()
    library = triact.SessionConfig()
    assert (config.idle_ttl, config.max_sessions, config.max_state_bytes) == (
        library.idle_ttl,
        library.max_sessions,
        library.max_state_bytes,
    )
    assert config.shutdown_grace == library.shutdown_grace
    assert ServeConfig().server_options() == ServerOptions()
    assert ServeConfig().work == WorkConfig()
    shown = run("serve", "--help").stdout
    assert f"(default: {library.idle_ttl:g})" in shown
    assert f"(default: {library.max_sessions})" in shown
