"""The MCP server: JSON-RPC 2.0 framing, the MCP protocol (both eras) and the stdio
transport, routing each tool call to its session's actor.

A server offers the tools it is given, as a :class:`ToolSet`: :data:`SESSION_TOOLS`
(the session tools, acting on sessions only), combined with others with ``|`` (such as
the work tools of :func:`triact.work.work_tools`), and optionally prompts, as a
:class:`PromptSet` (such as :func:`triact.work.work_prompts`). Serve them for a
:class:`~triact.SessionManager` on stdin/stdout with :func:`serve_stdio`, or on any
pair of Trio byte streams with :meth:`McpServer.serve`.
"""

from .._public import fixup_module_metadata
from ._args import SessionArgs
from ._auth import BearerTokens, TokenFileError
from ._framing import DEFAULT_MAX_LINE_BYTES
from ._handlers import ToolEnv
from ._http import HttpOptions, McpHttpApp, open_http_app
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
from ._prompts import Prompt, PromptArgument, PromptSet
from ._protocol import HANDSHAKE_VERSIONS, STATELESS_VERSIONS, SUPPORTED_VERSIONS
from ._results import SessionView
from ._schema import Spec
from ._server import McpServer, ServerOptions
from ._session_tools import SESSION_TOOLS
from ._stdio import serve_stdio
from ._tools import ERROR_CODES, ERROR_META_KEY, InvalidArgumentsError, Tool, ToolError, ToolSet

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "ERROR_CODES",
    "ERROR_META_KEY",
    "HANDSHAKE_VERSIONS",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "SESSION_TOOLS",
    "STATELESS_VERSIONS",
    "SUPPORTED_VERSIONS",
    "UNSUPPORTED_PROTOCOL_VERSION",
    "BearerTokens",
    "HttpOptions",
    "InvalidArgumentsError",
    "JsonRpcError",
    "McpHttpApp",
    "McpServer",
    "Prompt",
    "PromptArgument",
    "PromptSet",
    "ServerOptions",
    "SessionArgs",
    "SessionView",
    "Spec",
    "TokenFileError",
    "Tool",
    "ToolEnv",
    "ToolError",
    "ToolSet",
    "TransportError",
    "open_http_app",
    "serve_stdio",
]

fixup_module_metadata(__name__, globals(), __all__)
