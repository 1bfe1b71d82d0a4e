"""WorkConfig: the work layer's knobs, validated at construction."""

from __future__ import annotations

import os
from typing import Any

import attrs


def _at_least_one(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"WorkConfig.{attribute.name} must be an int >= 1, got {value!r}")


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise ValueError(
            f"WorkConfig.{attribute.name} must be a number of seconds > 0, got {value!r}"
        )


def _fraction(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"WorkConfig.{attribute.name} must be a number from 0 to 1, got {value!r}")


def _similarity(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1 <= value <= 1:
        raise ValueError(
            f"WorkConfig.{attribute.name} must be a number from -1 to 1, got {value!r}"
        )


def _days(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
        raise ValueError(f"WorkConfig.{attribute.name} must be a number of days > 0, got {value!r}")


SEMANTIC_MODES = ("auto", "on", "off")


def _file_name(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if (
        not isinstance(value, str)
        or value in ("", ".", "..")
        or "/" in value
        or (os.sep in value)
        or (os.altsep is not None and os.altsep in value)
        or "\x00" in value
    ):
        raise ValueError(
            f"WorkConfig.{attribute.name} must be a plain file name (no directory), got {value!r}"
        )


def _roots(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | os.PathLike):
        value = (value,)
    roots = []
    for root in value:
        text = os.fspath(root)
        if not isinstance(text, str) or not os.path.isabs(text):
            raise ValueError(f"WorkConfig.allowed_roots must hold absolute paths, got {root!r}")
        roots.append(os.path.realpath(text))
    return tuple(roots)


def _author(_: Any, attribute: attrs.Attribute[Any], value: tuple[str, str]) -> None:
    if not (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(part, str) and part.strip() and "\n" not in part for part in value)
    ):
        raise ValueError(f"WorkConfig.{attribute.name} must be (name, email), got {value!r}")


@attrs.frozen(kw_only=True)
class WorkConfig:
    """How a :class:`~triact.work.WorkSessions` behaves."""

    #: The git executable (a name looked up in PATH's absolute directories, or a path).
    git: str = "git"
    #: Whether checkpoint commits run the repository's hooks (``core.hooksPath``,
    #: ``.git/hooks``); off by default, so that no program of a repository runs
    #: (``triact serve --allow-git-hooks``). Other programs a repository names
    #: (filters, fsmonitor, pagers, ...) never run.
    allow_git_hooks: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: Seconds one git command may take before it is killed (GitTimeoutError).
    git_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Name of the Markdown handoff file written in the working directory by
    #: ``end(write_handoff=True)``.
    handoff_file: str = attrs.field(default=".triact-handoff.md", validator=_file_name)
    #: If set, working directories must be inside one of these (resolved) directories.
    allowed_roots: tuple[str, ...] | None = attrs.field(default=None, converter=_roots)
    #: Author and committer of checkpoint commits, used only when the repository's git
    #: configuration names none (user.name / user.email).
    checkpoint_author: tuple[str, str] = attrs.field(
        default=("triact", "triact@localhost"), validator=_author
    )
    #: Checkpoints kept per session (oldest dropped first).
    max_checkpoints: int = attrs.field(default=100, validator=_at_least_one)
    #: Longest checkpoint note, in characters.
    max_note_chars: int = attrs.field(default=2000, validator=_at_least_one)
    #: Uncommitted paths listed in a git report or checkpoint (all are counted).
    max_dirty_files: int = attrs.field(default=200, validator=_at_least_one)
    #: Bytes of JSON the uncommitted paths listed may take, all together: a path is
    #: listed whole or not at all (all are counted). Checkpoints keep their list in the
    #: session, whose size is bounded (``SessionConfig.max_state_bytes``).
    max_dirty_bytes: int = attrs.field(default=4096, validator=_at_least_one)
    #: Operations one session (or client binding) may trust at once.
    max_trusted_operations: int = attrs.field(default=100, validator=_at_least_one)
    #: Longest reflection, in characters.
    max_reflection_chars: int = attrs.field(default=10_000, validator=_at_least_one)
    #: Reflections kept per project (oldest dropped first).
    max_reflections_per_project: int = attrs.field(default=1000, validator=_at_least_one)
    #: Tags per reflection.
    max_reflection_tags: int = attrs.field(default=16, validator=_at_least_one)
    #: Most results one search returns.
    max_search_limit: int = attrs.field(default=100, validator=_at_least_one)
    #: Longest search query, in characters (searching by meaning embeds it whole).
    max_query_chars: int = attrs.field(default=2000, validator=_at_least_one)
    #: Longest conversation excerpt, in characters.
    max_conversation_chars: int = attrs.field(default=20_000, validator=_at_least_one)
    #: Conversation excerpts kept per project (oldest dropped first).
    max_conversations_per_project: int = attrs.field(default=1000, validator=_at_least_one)
    #: Search by meaning (hybrid search, with the ``semantic`` extra): "auto" uses it
    #: where the extra is installed, "on" requires it (opening fails without it), "off"
    #: searches by words alone (``triact serve --semantic``).
    semantic: str = attrs.field(default="auto", validator=attrs.validators.in_(SEMANTIC_MODES))
    #: How much of a hybrid score age can take away: 0 ignores age; 0.2 (the default)
    #: lets a note lose at most a fifth of its score as it ages (``--recency-weight``).
    recency_weight: float = attrs.field(default=0.2, validator=_fraction)
    #: Days after which age has taken half of what it can (``--recency-half-life``).
    recency_half_life_days: float = attrs.field(default=30.0, validator=_days)
    #: Cosine similarity a note needs to be found by its meaning alone (with no word
    #: of the query in it).
    min_similarity: float = attrs.field(default=0.2, validator=_similarity)
