"""What keeps a repository from running programs through triact's git calls.

A repository names programs in many places: its configuration (``core.fsmonitor``,
``filter.<x>.clean``, ``core.hooksPath``, ``gpg.program``, ``core.pager``, ...,
including files it pulls in with ``include.path``), its attributes (which filter or
diff driver a path goes through) and its hooks. Every git call of triact runs with an
environment that overrides each of those settings, whatever file set it, so that git
runs no program but itself:

- fixed overrides for the settings with one name (:data:`FIXED`);
- for the drivers, which have a name per driver (``filter.<x>.*``), the names found
  in the configuration git reads (``git config --null --list``, itself run under the
  fixed overrides), each overridden;
- the overrides are passed as ``GIT_CONFIG_COUNT`` / ``GIT_CONFIG_KEY_<n>`` /
  ``GIT_CONFIG_VALUE_<n>``: command-line configuration, which wins over every file,
  passed on to any git that git starts, and with key and value apart (a driver name
  may hold ``=``, which ``-c`` would split on).

The user's own configuration and attributes (system, global) are still read, for
what is not a program: the identity of commits, ``core.excludesFile``,
``safe.directory``, which paths the user's git would filter.
"""

from __future__ import annotations

import os
import re

#: Settings overridden on every call, by name. Hooks are switched off by
#: ``core.hooksPath`` unless the server allows them (``WorkConfig.allow_git_hooks``).
FIXED: tuple[tuple[str, str], ...] = (
    ("core.fsmonitor", "false"),
    ("core.pager", "cat"),
    ("core.editor", "true"),
    ("sequence.editor", "true"),
    ("core.askPass", ""),
    ("credential.helper", ""),  # an empty value empties the list of helpers
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("gc.auto", "0"),  # no automatic gc or maintenance after a commit
    ("maintenance.auto", "false"),
    ("submodule.recurse", "false"),
    ("protocol.allow", "never"),  # no transport at all (a partial clone's lazy fetch)
    ("safe.bareRepository", "explicit"),  # a bare repository inside the directory is none
)
HOOKS_OFF = ("core.hooksPath", "/dev/null")

#: Per-driver settings that name a program, and their harmless value.
_DRIVER_SETTINGS = {
    "filter": {"clean": "", "smudge": "", "process": "", "required": "false"},
    "diff": {"command": "", "textconv": ""},
    "merge": {"driver": ""},
}
#: At most this many drivers: more is refused rather than passed in the environment.
MAX_DRIVERS = 1000

#: The GIT_* variables kept from this process's environment: who commits.
IDENTITY = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")
#: Other variables that name a program git could run, dropped.
_PROGRAM_VARIABLES = frozenset({"SSH_ASKPASS", "PAGER", "EDITOR", "VISUAL"})


def base_environment(directory: str) -> dict[str, str]:
    """This process's environment without its GIT_* variables (but the identity ones)
    and without the variables naming programs git could run, plus ours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if (not key.startswith("GIT_") or key in IDENTITY) and key not in _PROGRAM_VARIABLES
    }
    env.update(
        GIT_CEILING_DIRECTORIES=os.path.dirname(directory) or directory,
        GIT_TERMINAL_PROMPT="0",  # never wait for a password
        GIT_OPTIONAL_LOCKS="0",  # status does not refresh (write) the index
        GIT_PAGER="cat",
        GIT_EDITOR="true",
        LC_ALL="C",  # messages we can quote
    )
    return env


def overrides(
    listing: str, *, allow_hooks: bool
) -> tuple[list[tuple[str, str]], frozenset[str], frozenset[str]]:
    """The overrides for a configuration listed by ``git config --null --list``; the
    names of its filter drivers, and its keys (lower-cased but the subsection).
    ValueError past :data:`MAX_DRIVERS` drivers."""
    keys = frozenset(entry.split("\n", 1)[0] for entry in listing.split("\0") if entry)
    pairs = list(FIXED) if allow_hooks else [*FIXED, HOOKS_OFF]
    drivers: set[tuple[str, str]] = set()
    for key in keys:
        section, _, rest = key.partition(".")
        if section == "pager":
            pairs.append((key, "false"))
        elif section in _DRIVER_SETTINGS and "." in rest:
            drivers.add((section, rest.rsplit(".", 1)[0]))
    if len(drivers) > MAX_DRIVERS:
        raise ValueError(f"the repository configures {len(drivers)} drivers; at most {MAX_DRIVERS}")
    for section, name in sorted(drivers):
        pairs += [(f"{section}.{name}.{var}", v) for var, v in _DRIVER_SETTINGS[section].items()]
    filters = frozenset(name for section, name in drivers if section == "filter")
    return pairs, filters, keys


def config_environment(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """``pairs`` as command-line configuration in the environment."""
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for n, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{n}"] = key
        env[f"GIT_CONFIG_VALUE_{n}"] = value
    return env


#: Where a path the client must not see starts: an absolute one, after anything but
#: a word's character, ``.``, ``~`` or ``-`` (in brackets, ``<...>``, after ``|``...),
#: or one going up (``../``) at the start of a word.
_PATH_START = re.compile(r"(?<![\w.~-])/|(?<![^\s'\"`(=,:;])\.\./")
#: How git starts a line of its own (what is not a path's continuation).
_GIT_LINE = re.compile(r"(?:fatal|error|warning|hint|usage): ")
_QUOTES = "'\"`"
HIDDEN = "<path>"


def redact(text: str, directory: str, limit: int = 500) -> str:
    """git's message, safe to show a client: paths in the working directory relative
    to it, any other path hidden whole, one paragraph, at most ``limit`` characters.

    A path may hold spaces, quotes and line breaks, so where one ends is not known: an
    unquoted one is hidden to the end of its line, a quoted one to the line's last such
    quote (only if the next line is git's own), and the lines after a hidden one's end
    up to the next line git starts (``fatal:``, ``error:``, ...) are left out."""
    text = text.replace(directory + os.sep, "").rstrip("\n")
    lines = text.split("\n")
    said = []
    hiding = False
    for n, line in enumerate(lines):
        if hiding and not _GIT_LINE.match(line):
            continue  # may be more of the path hidden above
        closes = n + 1 == len(lines) or _GIT_LINE.match(lines[n + 1]) is not None
        line, hiding = _hide(line, closes)
        said.append(line)
    text = " ".join(" ".join(said).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hide(line: str, closes: bool) -> tuple[str, bool]:
    """``line`` with its paths hidden, and whether the last runs on past its end.
    A quoted path ends at the line's last quote of its kind if ``closes``."""
    parts = []
    position = 0
    while (found := _PATH_START.search(line, position)) is not None:
        start = found.start()
        parts.append(line[position:start] + HIDDEN)
        quote = line[start - 1] if start and line[start - 1] in _QUOTES else None
        end = line.rfind(quote, start) if quote is not None and closes else -1
        if end < 0:
            return "".join(parts), True
        position = end
    parts.append(line[position:])
    return "".join(parts), False
