"""ServerOptions refuses, when it is made, a value its field cannot hold, naming the
field: a bool or an infinity for a count, a non-number for seconds, a non-bool flag."""

from __future__ import annotations

import math
from typing import Any

import pytest

from triact.transport import ServerOptions


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("max_line_bytes", math.inf, ValueError),
        ("max_line_bytes", True, ValueError),
        ("max_line_bytes", 1.5, ValueError),
        ("max_line_bytes", 0, ValueError),
        ("max_in_flight", True, ValueError),
        ("max_in_flight", "10", ValueError),
        ("max_output_bytes", math.inf, ValueError),
        ("max_output_bytes", None, ValueError),
        ("shutdown_grace", math.nan, ValueError),
        ("shutdown_grace", True, ValueError),
        ("shutdown_grace", "5", ValueError),
        ("shutdown_grace", -1, ValueError),
        ("progress_interval", True, ValueError),
        ("progress_interval", math.inf, ValueError),
        ("default_session", "no", TypeError),
        ("default_session", 1, TypeError),
        ("default_session", None, TypeError),
    ],
)
def test_a_value_the_field_cannot_hold_is_refused_naming_it(
    field: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=rf"^ServerOptions\.{field} must be"):
        ServerOptions(**{field: value})


def test_what_each_field_can_hold_is_taken() -> None:
    options = ServerOptions(
        max_line_bytes=1,
        max_in_flight=1,
        max_output_bytes=1,
        shutdown_grace=math.inf,  # wait for every call
        progress_interval=0.5,
        default_session=False,
    )
    assert (options.shutdown_grace, options.default_session) == (math.inf, False)
    assert ServerOptions(shutdown_grace=0).shutdown_grace == 0
