"""Every error of the ``triact`` command line names the option as the user typed it and
what it takes, never an internal name (a class, a converter function, a traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from triact.cli import main

#: Names of the code behind the options, which a user never typed.
INTERNALS = (
    "Config",
    "ServerOptions",
    "positive_",
    "non_negative",
    "_float",
    "_int",
    "Traceback",
    "Error:",
)

BAD_OPTIONS = [
    (["serve", "--idle-ttl", "abc"], "argument --idle-ttl: must be a number > 0, got 'abc'"),
    (["serve", "--idle-ttl", "-1"], "argument --idle-ttl: must be > 0, got -1"),
    (["serve", "--idle-ttl", "inf"], "argument --idle-ttl: must be a finite number > 0"),
    (["serve", "--idle-ttl", "nan"], "argument --idle-ttl: must be a finite number > 0"),
    (["serve", "--max-sessions", "1.5"], "argument --max-sessions: must be an integer >= 1"),
    (["serve", "--max-sessions", "0"], "argument --max-sessions: must be >= 1, got 0"),
    (["serve", "--max-line-bytes", "x"], "argument --max-line-bytes: must be an integer >= 1"),
    (["serve", "--shutdown-grace", "-2"], "argument --shutdown-grace: must be >= 0, got -2"),
    (["serve", "--progress-interval", "0"], "argument --progress-interval: must be > 0, got 0"),
    (["serve", "--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
    (["serve", "--allowed-root", "projects"], "argument --allowed-root: must be an absolute"),
    (["serve", "--git-timeout", "inf"], "argument --git-timeout: must be a finite number > 0"),
    (["serve", "--max-reflection-chars", "ten"], "argument --max-reflection-chars: must be an"),
    (
        ["serve", "--max-reflections-per-project", "0"],
        "argument --max-reflections-per-project: must be >= 1",
    ),
    (["stress", "--sessions", "many"], "argument --sessions: must be an integer >= 1"),
    (["stress", "--clients", "0"], "argument --clients: must be >= 1, got 0"),
    (["stress", "--duration", "x"], "argument --duration: must be a number > 0, got 'x'"),
    (["stress", "--faults", "0.9"], "argument --faults: must be within [0, 0.5], got 0.9"),
    (["stress", "--faults", "x"], "argument --faults: must be a number within [0, 0.5]"),
    (["stress", "--store", "redis"], "argument --store: must be memory, sqlite[:PATH] or a"),
    (["stress", "--store", "redis:x@host"], "redis:// (rediss://) URL, got ***@host"),
    (["stress", "--target", "sse"], "argument --target: invalid choice: 'sse'"),
    (["stress", "--seed", "x"], "argument --seed: must be an integer, got 'x'"),
]


@pytest.mark.parametrize(
    ("argv", "message"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS]
)
def test_a_bad_option_is_named_with_what_it_takes(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"triact {argv[0]}: error: "), err
    assert message in last, err
    assert not any(name in last for name in INTERNALS), last


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triact.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_stress_says_which_server_command_cannot_start() -> None:
    done = _run("stress", "--target", "stdio", "--server-command", "no-such-command --x")
    assert done.returncode == 2
    assert done.stderr == (
        "triact stress: error: cannot start the server command 'no-such-command --x': "
        "No such file or directory\n"
    )


def test_stress_says_when_the_server_exits_before_the_handshake() -> None:
    done = _run("stress", "--target", "stdio", "--server-command", "false")
    assert done.returncode == 2
    assert done.stderr.startswith(
        "triact stress: error: the server did not complete the MCP handshake"
    )
    assert "Traceback" not in done.stderr


def test_stress_says_when_its_store_cannot_open(tmp_path: Path) -> None:
    done = _run("stress", "--store", f"sqlite:{tmp_path / 'missing' / 'x.db'}")
    assert done.returncode == 2
    assert done.stderr.startswith("triact stress: error: cannot open session store ")
    assert "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_stress_over_http_says_which_server_command_cannot_start() -> None:
    done = _run("stress", "--target", "http", "--server-command", "no-such-command --x")
    assert done.returncode == 2
    assert done.stderr == (
        "triact stress: error: cannot start the server command "
        "'no-such-command --x --http 127.0.0.1:0': No such file or directory\n"
    )
