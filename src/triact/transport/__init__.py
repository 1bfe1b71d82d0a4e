"""The MCP server: JSON-RPC 2.0 framing, the MCP protocol (both eras) and the stdio
transport, routing each tool call to its session's actor.

Serve a :class:`~triact.SessionManager` on stdin/stdout with :func:`serve_stdio`, or
on any pair of Trio byte streams with :meth:`McpServer.serve`. ``triact serve`` is
:func:`run_serve`.
"""

from ._framing import DEFAULT_MAX_LINE_BYTES
from ._jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    JsonRpcError,
    TransportError,
)
from ._protocol import HANDSHAKE_VERSIONS, STATELESS_VERSIONS, SUPPORTED_VERSIONS
from ._serve import (
    ServeConfig,
    ServeConfigError,
    default_state_dir,
    default_store_path,
    load_secret_key,
    run_serve,
)
from ._server import McpServer, ServerOptions
from ._stdio import serve_stdio
from ._tools import ERROR_CODES, TOOLS, Tool, tool_definitions

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "ERROR_CODES",
    "HANDSHAKE_VERSIONS",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "STATELESS_VERSIONS",
    "SUPPORTED_VERSIONS",
    "TOOLS",
    "UNSUPPORTED_PROTOCOL_VERSION",
    "JsonRpcError",
    "McpServer",
    "ServeConfig",
    "ServeConfigError",
    "ServerOptions",
    "Tool",
    "TransportError",
    "default_state_dir",
    "default_store_path",
    "load_secret_key",
    "run_serve",
    "serve_stdio",
    "tool_definitions",
]
