// The TypeScript reference server for benchmarks/mcp_stdio.py: the session tools of
// tools.mjs on McpServer with StdioServerTransport, as the official MCP TypeScript SDK
// teaches, sessions in a Map. The SDK's v1 server speaks the initialize handshake era
// only (up to 2025-11-25).
//
//     node server.mjs   (after npm ci in a copy of this directory)
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { registerSessionTools } from "./tools.mjs";

const server = new McpServer({ name: "sessions-reference-ts", version: "0" });
registerSessionTools(server, new Map());
await server.connect(new StdioServerTransport());
