"""ServerOptions refuses, when it is made, a value its field cannot hold, naming the
field: a bool or an infinity for a count, a non-number for seconds, a non-bool flag."""

from __future__ import annotations

import math
from typing import Any

import pytest

from triact.transport import HttpOptions, ServerOptions
from triact.transport._h11server import HttpServerOptions


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


@pytest.mark.parametrize(
    ("make", "field", "value"),
    [
        (HttpOptions, "max_body_bytes", math.inf),
        (HttpOptions, "max_body_bytes", True),
        (HttpOptions, "max_requests", 2.5),
        (HttpOptions, "max_requests_per_principal", math.inf),
        (HttpOptions, "max_buffered_bytes", "1"),
        (HttpOptions, "max_mcp_sessions", True),
        (HttpOptions, "body_timeout", True),
        (HttpOptions, "body_timeout", math.nan),
        (HttpOptions, "session_ttl", "60"),
        (HttpServerOptions, "max_connections", math.inf),
        (HttpServerOptions, "max_connections", True),
        (HttpServerOptions, "max_head_bytes", 2048.0),
        (HttpServerOptions, "shutdown_grace", True),
        (HttpServerOptions, "keep_alive", True),
        (HttpServerOptions, "send_timeout", "5"),
    ],
)
def test_the_http_options_refuse_what_their_fields_cannot_hold(
    make: Any, field: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=rf"^{make.__name__}\.{field} must be"):
        make(**{field: value})
    default = getattr(make(), field)
    assert getattr(make(**{field: default or 1}), field) == (default or 1)
