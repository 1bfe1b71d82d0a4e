"""Prompts as values: :class:`Prompt` (one prompt template: its name, its arguments,
and what renders its messages) and :class:`PromptSet` (the prompts a server offers, in
their prompts/list order), and the answers to prompts/list and prompts/get.

A server given a prompt set advertises the ``prompts`` capability and answers both
methods; a server given none answers them "Method not found", as a server without the
capability does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import attrs

from ._jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, SHOWN_CHARS, JsonRpcError, shown_name

Role = Literal["user", "assistant"]

#: Longest value accepted for one prompt argument, in characters.
MAX_ARGUMENT_CHARS = 10_000


@attrs.frozen
class PromptArgument:
    """One argument of a prompt: a string the client fills in."""

    name: str
    description: str
    required: bool = False

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "required": self.required}


@attrs.frozen
class Prompt:
    """One prompt template.

    ``render(arguments)`` gets the arguments the client sent (every required one
    present, each a string, no unknown ones) and returns the messages, as
    ``(role, text)`` pairs.
    """

    name: str
    title: str
    description: str
    arguments: tuple[PromptArgument, ...]
    render: Callable[[Mapping[str, str]], Iterable[tuple[Role, str]]]

    def definition(self) -> dict[str, Any]:
        """The prompts/list entry."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "arguments": [argument.definition() for argument in self.arguments],
        }

    def get(self, arguments: Any) -> dict[str, Any]:
        """The prompts/get result for ``arguments``; JsonRpcError (invalid params) if
        they are not what this prompt takes."""
        if arguments is None:
            arguments = {}
        if type(arguments) is not dict:
            raise JsonRpcError(INVALID_PARAMS, "Invalid params: arguments must be an object")
        known = {argument.name for argument in self.arguments}
        unknown = sorted(name for name in arguments if name not in known)
        if unknown:
            raise JsonRpcError(
                INVALID_PARAMS,
                f"Invalid params: prompt {self.name!r} takes no argument(s) "
                f"{_listed(unknown)}; it takes: {', '.join(sorted(known)) or 'none'}",
            )
        for name, value in arguments.items():
            if type(value) is not str:
                raise JsonRpcError(
                    INVALID_PARAMS, f"Invalid params: argument {name!r} must be a string"
                )
            if len(value) > MAX_ARGUMENT_CHARS:
                raise JsonRpcError(
                    INVALID_PARAMS,
                    f"Invalid params: argument {name!r} has more than "
                    f"{MAX_ARGUMENT_CHARS} characters",
                )
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:  # it would reach the prompt's text
                raise JsonRpcError(
                    INVALID_PARAMS,
                    f"Invalid params: argument {name!r} holds a lone surrogate "
                    f"(U+{ord(value[exc.start]):04X}) at index {exc.start}, which is not "
                    "valid Unicode",
                ) from None
        missing = [a.name for a in self.arguments if a.required and not arguments.get(a.name)]
        if missing:
            raise JsonRpcError(
                INVALID_PARAMS,
                f"Invalid params: prompt {self.name!r} needs argument(s) "
                f"{', '.join(map(repr, missing))}",
            )
        messages = [
            {"role": role, "content": {"type": "text", "text": text}}
            for role, text in self.render(arguments)
        ]
        return {"description": self.description, "messages": messages}


def _prompts_tuple(prompts: Iterable[Prompt]) -> tuple[Prompt, ...]:
    return tuple(prompts)


@attrs.frozen
class PromptSet:
    """The prompts a server offers, by name, in the order prompts/list gives them.

    ``a | b`` combines two sets: a prompt of ``b`` replaces the prompt of ``a`` with
    the same name, in its place; the others of ``b`` follow ``a``'s.
    """

    prompts: tuple[Prompt, ...] = attrs.field(converter=_prompts_tuple)
    _by_name: dict[str, Prompt] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        names = [prompt.name for prompt in self.prompts]
        if len(set(names)) != len(names):
            twice = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(f"a PromptSet names each prompt once; {twice} appear more than once")
        object.__setattr__(self, "_by_name", dict(zip(names, self.prompts, strict=True)))

    def __or__(self, other: PromptSet) -> PromptSet:
        if not isinstance(other, PromptSet):
            return NotImplemented
        replacing = other._by_name
        prompts = [replacing.get(prompt.name, prompt) for prompt in self.prompts]
        prompts += [prompt for prompt in other.prompts if prompt.name not in self._by_name]
        return PromptSet(prompts)

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self.prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def get(self, name: str) -> Prompt | None:
        """The prompt called ``name``, or None."""
        return self._by_name.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    # -- the protocol's two methods ----------------------------------------------------

    def list_result(self, params: dict[str, Any]) -> dict[str, Any]:
        """The prompts/list result (one page)."""
        if params.get("cursor") is not None:
            raise JsonRpcError(
                INVALID_PARAMS, "Invalid params: unknown cursor (prompts/list has one page)"
            )
        return {"prompts": [prompt.definition() for prompt in self.prompts]}

    def get_result(self, params: dict[str, Any]) -> dict[str, Any]:
        """The prompts/get result; JsonRpcError (invalid params) for an unknown prompt
        or arguments it does not take."""
        name = params.get("name")
        if type(name) is not str:
            raise JsonRpcError(INVALID_PARAMS, "Invalid params: prompts/get needs a name (string)")
        prompt = self._by_name.get(name)
        if prompt is None:
            raise JsonRpcError(
                INVALID_PARAMS,
                f"Invalid params: no prompt named {name[:200]!r}; prompts/list names them",
            )
        return prompt.get(params.get("arguments"))


#: What a server that offers prompts adds to its capabilities.
PROMPTS_CAPABILITY: dict[str, Any] = {"listChanged": False}


def answer(prompts: PromptSet | None, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The result of prompts/list or prompts/get (before the era's shaping);
    "Method not found" for a server without prompts."""
    if prompts is None:
        raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method} (no prompts here)")
    if method == "prompts/list":
        return prompts.list_result(params)
    assert method == "prompts/get"
    return prompts.get_result(params)


def advertised(prompts: PromptSet | None, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` (of initialize or server/discover), with the prompts capability if
    there are prompts."""
    if prompts is not None:
        result["capabilities"] = {**result["capabilities"], "prompts": PROMPTS_CAPABILITY}
    return result


def _listed(names: list[str], most: int = 5) -> str:
    """Names a client sent, as a refusal lists them: the first ``most``, each cut
    short, and how many more there are."""
    shown = ", ".join(
        repr(name) if len(name) <= SHOWN_CHARS else shown_name(name) for name in names[:most]
    )
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"
