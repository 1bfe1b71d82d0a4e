// The session tools of the TypeScript reference servers (server.mjs over stdio,
// http_server.mjs over streamable HTTP): the tools of ../mcp_sdk_server.py written the
// way the official MCP TypeScript SDK teaches (McpServer.registerTool with zod schemas),
// on sessions kept in a Map.
//
// session_create and session_update take triact's arguments (set, increment, delete,
// expected_version) and answer {session_id, version, data} as structured content with
// its text rendering; a failed update throws, which the SDK answers as an isError
// result. The handlers never await, so no two updates interleave and no lock is needed:
// every cost measured is the SDK's own.
import { randomBytes } from "node:crypto";
import { z } from "zod";

// Register session_create and session_update on `server`, over the sessions in `sessions`.
export function registerSessionTools(server, sessions) {
  server.registerTool(
    "session_create",
    {
      description: "Create a session and return its session_id.",
      inputSchema: { topic: z.string().optional() },
      outputSchema: { session_id: z.string(), version: z.number().int() },
    },
    async ({ topic }) => {
      const sessionId = randomBytes(16).toString("base64url");
      sessions.set(sessionId, { topic: topic ?? null, version: 1, data: {} });
      const result = { session_id: sessionId, version: 1 };
      return { content: [{ type: "text", text: JSON.stringify(result) }], structuredContent: result };
    },
  );

  server.registerTool(
    "session_update",
    {
      description:
        "Change the session's data atomically: set keys, increment numeric keys, delete keys; " +
        "with expected_version, only at that version.",
      inputSchema: {
        session_id: z.string(),
        set: z.record(z.string(), z.any()).optional(),
        increment: z.record(z.string(), z.number()).optional(),
        delete: z.array(z.string()).optional(),
        expected_version: z.number().int().optional(),
      },
      outputSchema: {
        session_id: z.string(),
        version: z.number().int(),
        data: z.record(z.string(), z.any()),
      },
    },
    async ({ session_id, set, increment, delete: remove, expected_version }) => {
      const session = sessions.get(session_id);
      if (session === undefined) {
        throw new Error(`not_found: no session ${JSON.stringify(session_id)}; create one`);
      }
      if (expected_version !== undefined && expected_version !== session.version) {
        throw new Error(
          `conflict: session ${JSON.stringify(session_id)} is at version ${session.version}, ` +
            `not ${expected_version}`,
        );
      }
      const data = { ...session.data };
      for (const key of remove ?? []) delete data[key];
      Object.assign(data, set ?? {});
      for (const [key, delta] of Object.entries(increment ?? {})) {
        const old = Object.hasOwn(data, key) ? data[key] : 0;
        if (typeof old !== "number" || !Number.isFinite(old + delta)) {
          throw new Error(`invalid_arguments: data[${JSON.stringify(key)}] cannot be incremented`);
        }
        data[key] = old + delta;
      }
      session.data = data;
      session.version += 1;
      const result = { session_id, version: session.version, data };
      return { content: [{ type: "text", text: JSON.stringify(result) }], structuredContent: result };
    },
  );
}
