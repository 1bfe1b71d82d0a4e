// The TypeScript reference server for benchmarks/mcp_http.py: the session tools of
// tools.mjs over the official MCP TypeScript SDK's streamable HTTP transport, set up as
// the SDK's own example teaches (examples/server/jsonResponseStreamableHttp.js):
// createMcpExpressApp (Express 5, DNS rebinding protection on loopback), one
// StreamableHTTPServerTransport and McpServer per MCP session (initialize opens one and
// answers its Mcp-Session-Id; later requests carry it; an unknown one gets 404), JSON
// responses (enableJsonResponse). Every MCP session shares the one Map of sessions. The
// SDK's v1 server speaks the initialize handshake era only (up to 2025-11-25).
//
//     node http_server.mjs [PORT]   (after npm ci in a copy of this directory)
//
// It prints "http://127.0.0.1:PORT/mcp" on stderr once it listens (PORT 0, the
// default: a free one).
import { randomUUID } from "node:crypto";
import { createMcpExpressApp } from "@modelcontextprotocol/sdk/server/express.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { registerSessionTools } from "./tools.mjs";

const sessions = new Map(); // the session tools' sessions, shared by every MCP session
const transports = new Map(); // MCP session id -> its transport

function jsonRpcError(res, status, code, message) {
  res.status(status).json({ jsonrpc: "2.0", error: { code, message }, id: null });
}

const app = createMcpExpressApp();

app.post("/mcp", async (req, res) => {
  try {
    const sessionId = req.headers["mcp-session-id"];
    const known = sessionId === undefined ? undefined : transports.get(sessionId);
    if (known !== undefined) {
      await known.handleRequest(req, res, req.body);
      return;
    }
    if (sessionId !== undefined) {
      jsonRpcError(res, 404, -32001, "Session not found");
      return;
    }
    if (!isInitializeRequest(req.body)) {
      jsonRpcError(res, 400, -32000, "Bad Request: No valid session ID provided");
      return;
    }
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: true,
      onsessioninitialized: (id) => {
        transports.set(id, transport);
      },
    });
    transport.onclose = () => {
      if (transport.sessionId !== undefined) transports.delete(transport.sessionId);
    };
    const server = new McpServer({ name: "sessions-reference-ts-http", version: "0" });
    registerSessionTools(server, sessions);
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  } catch (error) {
    console.error("error handling an MCP request:", error);
    if (!res.headersSent) jsonRpcError(res, 500, -32603, "Internal server error");
  }
});

app.delete("/mcp", async (req, res) => {
  const transport = transports.get(req.headers["mcp-session-id"]);
  if (transport === undefined) {
    jsonRpcError(res, 404, -32001, "Session not found");
    return;
  }
  await transport.handleRequest(req, res);
});

app.get("/mcp", (req, res) => {
  res.status(405).set("Allow", "POST, DELETE").send("Method Not Allowed");
});

const listener = app.listen(Number(process.argv[2] ?? 0), "127.0.0.1", (error) => {
  if (error) {
    console.error("cannot listen:", error);
    process.exit(1);
  }
  console.error(`listening at http://127.0.0.1:${listener.address().port}/mcp`);
});
