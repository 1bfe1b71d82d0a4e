"""The docs' code: every Python block compiles, every complete program runs and prints
what its comments say, and every command line (in ``sh`` blocks, in inline code, in
the client configurations) names commands, options and extras that exist."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from triact.cli import main as triact_main

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXTRAS = set(
    tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
)
#: Stands for the repository's clone URL in the install commands.
REPOSITORY = "<repository URL>"
#: What a complete program ends with: it is run, not only compiled.
RUNS = re.compile(r"^(trio\.run\(main\)|asyncio\.run\(main\(\)\))$", re.MULTILINE)


def _blocks(language: str) -> Iterator[tuple[str, str]]:
    """(where, text) of each fenced block in the given language."""
    for page in PAGES:
        text = page.read_text()
        pattern = rf"^```{language}\n(.*?)^```"
        for match in re.finditer(pattern, text, flags=re.DOTALL | re.MULTILINE):
            line = text.count("\n", 0, match.start()) + 1
            yield f"{page.relative_to(ROOT)}:{line}", match.group(1)


def _params(items: list[tuple[str, str]]) -> object:
    return pytest.mark.parametrize("code", [c for _, c in items], ids=[w for w, _ in items])


PYTHON = list(_blocks("python"))
PROGRAMS = [(where, code) for where, code in PYTHON if RUNS.search(code)]


def test_the_docs_have_their_examples() -> None:
    assert len(PYTHON) >= 10
    assert {where.split(":")[0] for where, _ in PROGRAMS} >= {
        "docs/actors.md",
        "docs/sessions.md",
        "docs/embedding.md",
        "docs/work.md",
    }


@_params(PYTHON)  # type: ignore[misc]
def test_every_python_block_compiles(code: str) -> None:
    compile(code, "<doc>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def _git_repository(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README").write_text("a project\n")
    return path


@_params(PROGRAMS)  # type: ignore[misc]
def test_every_program_runs_and_prints_what_its_comments_say(code: str, tmp_path: Path) -> None:
    """A ``print(...)  # text`` line must print a line that ``text`` starts with."""
    project = _git_repository(tmp_path / "project")
    code = code.replace("/home/me/project", str(project))
    env = {**os.environ, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    prints = [line for line in code.splitlines() if line.strip().startswith("print(")]
    assert len(printed) == len(prints), (printed, prints)
    for line, out in zip(prints, printed, strict=True):
        _, hash_, comment = line.partition("  # ")
        if hash_:
            assert out, f"{line!r} printed an empty line"
            assert comment.startswith(out), f"{line!r} printed {out!r}"


# -- command lines -----------------------------------------------------------------


def _check_triact(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """``triact *args`` parses (checked with --help, so nothing runs)."""
    with pytest.raises(SystemExit) as exited:
        triact_main([*args, "--help"])
    captured = capsys.readouterr()
    assert exited.value.code == 0, f"triact {shlex.join(args)}: {captured.err}"


#: The CPU build of torch the semantic extra's docs say to install first: the one CI
#: installs.
CPU_TORCH = re.search(r"torch==[0-9.]+", (ROOT / ".ci" / "run").read_text())


def _check_requirement(requirement: str) -> None:
    if requirement.startswith("torch=="):
        assert CPU_TORCH is not None, ".ci/run installs no torch"
        assert requirement == CPU_TORCH.group(), requirement
        return
    if requirement.startswith("."):
        source, extras = ".", requirement[1:]
    else:
        name, _, source = requirement.partition(" @ ")
        assert source == f"git+{REPOSITORY}", requirement
        assert name.startswith("triact"), requirement
        extras = name[len("triact") :]
    if extras:
        assert re.fullmatch(r"\[[a-z,]+\]", extras), requirement
        assert set(extras[1:-1].split(",")) <= EXTRAS, requirement


def _check_command(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    program, *args = words
    if program == "triact":
        _check_triact(args, capsys)
    elif program == "pip":
        assert args[0] == "install", words
        options = {"-e", "--upgrade", "--force-reinstall", "--no-deps"}
        requirements = [a for a in args[1:] if a not in options]
        assert len(requirements) == 1, words
        _check_requirement(requirements[0])
    elif program == "pipx":
        assert args in (["install", "."], ["install", f"git+{REPOSITORY}"], ["reinstall", "triact"])
    elif program == "uvx":
        options = ["--refresh"] if args[0] == "--refresh" else []
        assert args[len(options)] == "--from", words
        source = args[len(options) + 1]
        assert source in (".", f"git+{REPOSITORY}") or source.startswith("/"), words
        _check_command(args[len(options) + 2 :], capsys)
    elif program == "claude":
        if args == ["--debug"]:
            return
        assert args[:2] == ["mcp", "add"], words
        if args[2:4] == ["--transport", "http"]:  # a server at a URL, started by the user
            if len(args) > 6:  # a remote one: its URL and bearer header
                assert args[5].endswith("/mcp"), words
                assert args[6] == "--header", words
                assert args[7].startswith("Authorization: Bearer "), words
            else:
                _check_mcp_url(args[5])
            return
        assert args[3] == "--", words
        _check_command(args[4:], capsys)
    elif program == "python" and args[0].startswith("benchmarks/"):
        done = subprocess.run(
            [sys.executable, str(ROOT / args[0]), *args[1:], "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{shlex.join(words)}: {done.stderr}"
    elif program != "pytest":
        raise AssertionError(f"a command the docs test does not know: {shlex.join(words)}")


def _command_lines() -> Iterator[tuple[str, str]]:
    for where, block in _blocks("sh"):
        for line in block.splitlines():
            command = line.partition("  #")[0].strip()
            if command:
                yield where, command
    programs = ("triact ", "pip ", "pipx ", "uvx ", "claude ", "python benchmarks/")
    for page in PAGES:
        prose = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)
        for span in re.findall(r"`([^`]+)`", prose):
            span = " ".join(span.split())
            if span.startswith(programs) and "<" not in span.replace(REPOSITORY, ""):
                yield str(page.relative_to(ROOT)), span


COMMANDS = list(_command_lines())


def test_the_docs_have_their_command_lines() -> None:
    assert len(COMMANDS) >= 20
    assert {c.split()[0] for _, c in COMMANDS} >= {"triact", "pip", "pipx", "uvx", "claude"}


@pytest.mark.parametrize("command", [c for _, c in COMMANDS], ids=[f"{w}:{c}" for w, c in COMMANDS])
def test_every_command_line_names_what_exists(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for part in command.split("&&"):
        _check_command(shlex.split(part), capsys)


CONFIGURATIONS = [(where, code) for where, code in _blocks("json") if '"mcpServers"' in code]


def test_the_docs_have_their_client_configurations() -> None:
    assert len(CONFIGURATIONS) >= 3


@_params(CONFIGURATIONS)  # type: ignore[misc]
def test_every_client_configuration_starts_triact(
    code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    servers = json.loads(code)["mcpServers"]
    for server in servers.values():
        if server.get("type") == "http":  # a server the user started: its URL
            if "headers" in server:  # a remote one, with its bearer header
                assert server["url"].endswith("/mcp"), server
                assert server["headers"]["Authorization"].startswith("Bearer "), server
            else:
                _check_mcp_url(server["url"])
            continue
        _check_command([Path(server["command"]).name, *server["args"]], capsys)


def _check_mcp_url(url: str) -> None:
    """A URL where ``triact serve --http`` serves MCP: a loopback host, path /mcp."""
    assert re.fullmatch(r"http://(127\.0\.0\.1|localhost):[0-9]+/mcp", url), url


def test_the_asyncio_example_prints_what_it_says() -> None:
    (code,) = [code for where, code in PROGRAMS if "asyncio.run(main())" in code]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{'n': 101}\n"


def test_the_sample_json_line_is_a_row_of_its_table() -> None:
    page = (ROOT / "docs" / "performance.md").read_text()
    (sample,) = re.findall(r'^  ```text\n(  \{"bench".*?)^  ```', page, flags=re.S | re.M)
    line = json.loads(" ".join(sample.split()).replace('"..."', '""').replace("[...]", "[]"))
    (row,) = [r for r in page.splitlines() if r.startswith("|") and f"(`{line['bench']}`)" in r]
    cells = [c.strip().replace(",", "") for c in row.split("|")]
    assert float(cells[2].split()[0]) == line["median"]
    assert float(cells[3].split()[0]) == line["baseline_median"]
    assert float(cells[4]) == line["ratio"]
    assert round(line["median"] / line["baseline_median"], 3) == line["ratio"]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_pages_cite_only_what_a_reader_has(page: Path) -> None:
    """The design lives in docs/architecture.md; nothing points outside the repository's
    own files for it, or to discussions a reader cannot see."""
    text = page.read_text()
    for unseen in ("shared/", "DESIGN.md", "DESIGN I", "the issue", "the workspace"):
        assert unseen not in text, f"{page.name} mentions {unseen!r}"
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_the_readme_counts_the_tools_mcp_md_documents() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = re.findall(r"^### `([a-z_]+)`$", (ROOT / "docs" / "mcp.md").read_text(), re.M)
    (count,) = re.findall(r"(\d+) tools", readme)
    assert int(count) == len(documented)
    assert all(f"`{name}`" in readme for name in documented)
