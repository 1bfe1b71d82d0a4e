"""Reflections: checking what is stored, turning a query into terms, and the simple
scored text match of the in-memory backend."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from ._config import WorkConfig
from ._errors import WorkArgumentError, WorkLimitError
from ._records import Reflection

_WORD = re.compile(r"[^\W_]+")  # letters and digits, as FTS5's unicode61 splits them
#: Query terms used at most (the rest are ignored).
MAX_TERMS = 32
_TAG_CHARS = 64
_PROJECT_CHARS = 200


def words(text: str) -> list[str]:
    """The lower-cased words of ``text``."""
    return [word.casefold() for word in _WORD.findall(text)]


def query_terms(query: str) -> list[str]:
    """The distinct words of a query, in order; WorkArgumentError if it has none."""
    terms = list(dict.fromkeys(words(query)))[:MAX_TERMS]
    if not terms:
        shown = repr(query) if len(query) <= 100 else f"of {len(query)} characters"
        raise WorkArgumentError(f"query {shown} has no words to search for")
    return terms


def check_query(config: WorkConfig, query: str) -> list[str]:
    """The words of a query (:func:`query_terms`); WorkArgumentError if it is not a
    string or has no words, WorkLimitError if it is longer than
    ``config.max_query_chars`` (it is not quoted back then)."""
    if not isinstance(query, str):
        raise WorkArgumentError(f"query must be a string, got {type(query).__name__}")
    if len(query) > config.max_query_chars:
        raise WorkLimitError(
            f"a query has at most {config.max_query_chars} characters "
            f"(WorkConfig.max_query_chars), got {len(query)}"
        )
    return query_terms(query)


def check_reflection(
    config: WorkConfig, content: str, tags: Iterable[str], project: str | None
) -> tuple[str, tuple[str, ...], str | None]:
    """The reflection as it is stored (tags stripped, lower-cased, de-duplicated);
    WorkLimitError / WorkArgumentError if it is refused."""
    return check_note(config, content, tags, project, "a reflection", "max_reflection_chars")


def check_excerpt(
    config: WorkConfig, content: str, tags: Iterable[str], project: str | None
) -> tuple[str, tuple[str, ...], str | None]:
    """The conversation excerpt as it is stored, as :func:`check_reflection`."""
    return check_note(
        config, content, tags, project, "a conversation excerpt", "max_conversation_chars"
    )


def check_note(
    config: WorkConfig,
    content: str,
    tags: Iterable[str],
    project: str | None,
    what: str,
    setting: str,
) -> tuple[str, tuple[str, ...], str | None]:
    if not isinstance(content, str) or not content.strip():
        raise WorkArgumentError(f"{what}'s content must be a non-empty string")
    _check_text(content, f"{what}'s content")
    most: int = getattr(config, setting)
    if len(content) > most:
        raise WorkLimitError(
            f"{what} holds at most {most} characters (WorkConfig.{setting}), got "
            f"{len(content)}; shorten it or split it"
        )
    return content, check_tags(config, tags), check_project(project)


def check_tags(config: WorkConfig, tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise WorkArgumentError("tags must be a list of strings, not a string")
    cleaned = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise WorkArgumentError(f"a tag must be a non-empty string, got {tag!r}")
        tag = tag.strip().casefold()
        _check_text(tag, "a tag")
        if len(tag) > _TAG_CHARS:
            raise WorkLimitError(f"a tag has at most {_TAG_CHARS} characters, got {tag!r}")
        cleaned.append(tag)
    unique = tuple(dict.fromkeys(cleaned))
    if len(unique) > config.max_reflection_tags:
        raise WorkLimitError(
            f"a note has at most {config.max_reflection_tags} tags "
            f"(WorkConfig.max_reflection_tags), got {len(unique)}"
        )
    return unique


def check_project(project: str | None) -> str | None:
    if project is None:
        return None
    if not isinstance(project, str) or not project.strip():
        raise WorkArgumentError(f"project must be a non-empty string or null, got {project!r}")
    if len(project) > _PROJECT_CHARS:
        raise WorkLimitError(f"project names have at most {_PROJECT_CHARS} characters")
    _check_text(project, "a project name")
    return project


def _check_text(text: str, what: str) -> None:
    """WorkArgumentError if ``text`` holds a lone surrogate, which no store can keep
    as text (nor read back)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise WorkArgumentError(
            f"{what} is not valid Unicode text (it holds a lone surrogate)"
        ) from None


def check_limit(config: WorkConfig, limit: int) -> int:
    if type(limit) is not int or not 1 <= limit <= config.max_search_limit:
        raise WorkArgumentError(
            f"limit must be an int from 1 to {config.max_search_limit} "
            f"(WorkConfig.max_search_limit), got {limit!r}"
        )
    return limit


def coverage(note: Reflection, terms: Sequence[str]) -> float:
    """The share of ``terms`` that begin a word of the note (its content or tags)."""
    if not terms:
        return 0.0
    found = set(words(note.content)) | {w for tag in note.tags for w in words(tag)}
    return sum(any(w.startswith(term) for w in found) for term in terms) / len(terms)


def text_match(
    reflections: Sequence[Reflection], terms: Sequence[str], limit: int
) -> list[tuple[Reflection, float]]:
    """Score each reflection against the terms, best first, newest first among equals.

    A term matches a word it begins (``commit`` matches ``commits``). The score is a
    small BM25: for each term, its rarity among the candidates times a saturating
    count of its matches, so that matching more and rarer terms ranks higher.
    """
    tokens = [words(r.content) + [w for tag in r.tags for w in words(tag)] for r in reflections]
    matches = [[sum(w.startswith(term) for w in doc) for term in terms] for doc in tokens]
    total = len(reflections)
    weights = []
    for i in range(len(terms)):
        df = sum(1 for counts in matches if counts[i])
        weights.append(math.log(1 + (total - df + 0.5) / (df + 0.5)))
    scored = []
    for reflection, counts in zip(reflections, matches, strict=True):
        score = sum(w * c / (c + 1.2) for w, c in zip(weights, counts, strict=True) if c)
        if score > 0:
            scored.append((reflection, score))
    scored.sort(key=lambda item: (-item[1], -item[0].created_at, -item[0].id))
    return scored[:limit]
