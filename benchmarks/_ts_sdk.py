"""The official MCP TypeScript SDK's reference servers (``baselines/ts_sdk``): their
packages installed with ``npm ci`` from the committed lock file into a cache directory
(``$TRIACT_NODE_CACHE``, else ``~/.cache/triact/node-clients``), once per version of
the directory's files, and the command that starts one of them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

TS_SDK = Path(__file__).resolve().parent / "baselines" / "ts_sdk"
#: The files copied into the install (and hashed to name it).
FILES = ("package.json", "package-lock.json", "tools.mjs", "server.mjs", "http_server.mjs")
NPM_TIMEOUT = 600.0


def ts_command(script: str, who: str) -> tuple[str, ...] | None:
    """The command that starts ``script`` (``server.mjs``: stdio, ``http_server.mjs``:
    streamable HTTP), installing the packages first if this version of the directory
    has none yet; None, with a message on stderr naming ``who`` (the benchmark), where
    Node or npm is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        print(
            f"{who}: node and npm not found: the TypeScript SDK baseline is skipped",
            file=sys.stderr,
        )
        return None
    digest = hashlib.sha256(b"".join((TS_SDK / name).read_bytes() for name in FILES))
    configured = os.environ.get("TRIACT_NODE_CACHE")
    root = (
        Path(configured)
        if configured
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "triact"
        / "node-clients"
    )
    target = root / f"bench-ts-sdk-{digest.hexdigest()[:16]}"
    if not (target / "node_modules" / ".installed").exists():
        staging = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in FILES:
            shutil.copyfile(TS_SDK / name, staging / name)
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=staging,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"npm ci failed:\n{done.stdout}\n{done.stderr}")
        (staging / "node_modules" / ".installed").touch()
        try:
            staging.rename(target)
        except OSError:  # another run installed it first
            shutil.rmtree(staging, ignore_errors=True)
    return (node, str(target / script))


def ts_versions(command: Sequence[str]) -> tuple[str, str]:
    """The SDK's version (from its installed package.json) and node's."""
    package = Path(command[1]).parent / "node_modules" / "@modelcontextprotocol" / "sdk"
    sdk = json.loads((package / "package.json").read_text())["version"]
    node = subprocess.run([command[0], "--version"], capture_output=True, text=True, check=True)
    return sdk, node.stdout.strip().lstrip("v")
