// Drives `triact serve` through an official MCP TypeScript SDK client, for the tests in
// this directory: one command per line on stdin, one answer per line on stdout.
//
//   node driver.mjs v1|v2|v2-auto
//
// Commands: {"id", "op": "connect", "command", "args", "env", "stderr"} starts the server
// (its stderr appended to the file named), or {"id", "op": "connect", "url", "headers"}
// connects to one over streamable HTTP (sending "headers", if given, with each request); "sessionId" (the HTTP transport's MCP session id, or null),
// "terminate" (ends the HTTP MCP session: DELETE), "listTools", "protocol" (the
// negotiated revision; v2 only), "call" {"name", "arguments",
// "progress", "abortAfterMs", "timeoutMs"}, "errors" (what the client reported through
// onerror since the last "errors"), "close". Commands run concurrently; each answer is
// {"id", "ok": ...} or {"id", "error": {"name", "code", "message"}}.
import fs from "node:fs";
import readline from "node:readline";

const flavour = process.argv[2];
let Client, StdioClientTransport, StreamableHTTPClientTransport;
if (flavour === "v1") {
  ({ Client } = await import("@modelcontextprotocol/sdk/client/index.js"));
  ({ StdioClientTransport } = await import("@modelcontextprotocol/sdk/client/stdio.js"));
  ({ StreamableHTTPClientTransport } = await import(
    "@modelcontextprotocol/sdk/client/streamableHttp.js"
  ));
} else if (flavour === "v2" || flavour === "v2-auto") {
  ({ Client, StreamableHTTPClientTransport } = await import("@modelcontextprotocol/client"));
  ({ StdioClientTransport } = await import("@modelcontextprotocol/client/stdio"));
} else {
  throw new Error(`usage: node driver.mjs v1|v2|v2-auto, not ${flavour}`);
}

let client = null;
let transport = null;
const reported = [];

function answer(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

function describe(error) {
  return {
    name: error?.constructor?.name ?? typeof error,
    code: error?.code ?? null,
    message: String(error?.message ?? error),
  };
}

async function connect(command) {
  if (command.url !== undefined) {
    // "headers": sent with every request (a bearer token, as a remote server's
    // client configuration gives it).
    const options = command.headers ? { requestInit: { headers: command.headers } } : undefined;
    transport = new StreamableHTTPClientTransport(new URL(command.url), options);
  } else {
    const stderr = fs.openSync(command.stderr, "a");
    transport = new StdioClientTransport({
      command: command.command,
      args: command.args,
      env: command.env,
      stderr,
    });
  }
  const options = { capabilities: {} };
  if (flavour === "v2-auto") {
    options.versionNegotiation = { mode: "auto" };
  }
  client = new Client({ name: `triact-tests-${flavour}`, version: "0" }, options);
  client.onerror = (error) => reported.push(describe(error));
  await client.connect(transport);
  return {
    server: client.getServerVersion?.() ?? null,
    protocol: client.getNegotiatedProtocolVersion?.() ?? null,
  };
}

async function call(command) {
  const progress = [];
  const options = { timeout: command.timeoutMs ?? 60_000 };
  if (command.progress) {
    options.onprogress = (update) => progress.push(update);
  }
  let timer = null;
  if (command.abortAfterMs !== undefined) {
    const controller = new AbortController();
    options.signal = controller.signal;
    timer = setTimeout(() => controller.abort("the test cancelled it"), command.abortAfterMs);
  }
  const params = { name: command.name, arguments: command.arguments ?? {} };
  try {
    const result =
      flavour === "v1"
        ? await client.callTool(params, undefined, options)
        : await client.callTool(params, options);
    return { result, progress };
  } finally {
    clearTimeout(timer);
  }
}

async function run(command) {
  switch (command.op) {
    case "connect":
      return await connect(command);
    case "listTools":
      return await client.listTools();
    case "call":
      return await call(command);
    case "sessionId":
      return transport.sessionId ?? null;
    case "terminate":
      await transport.terminateSession();
      return transport.sessionId ?? null;
    case "protocol":
      return client.getNegotiatedProtocolVersion?.() ?? null;
    case "errors":
      return reported.splice(0);
    case "close":
      await client.close();
      return null;
    default:
      throw new Error(`unknown op ${command.op}`);
  }
}

const lines = readline.createInterface({ input: process.stdin });
const pending = new Set();
lines.on("line", (line) => {
  const command = JSON.parse(line);
  const done = run(command).then(
    (ok) => answer({ id: command.id, ok: ok ?? null }),
    (error) => answer({ id: command.id, error: describe(error) }),
  );
  pending.add(done);
  done.finally(() => pending.delete(done));
});
lines.on("close", async () => {
  await Promise.allSettled([...pending]);
  if (client !== null) {
    await client.close().catch(() => {});
  }
  process.exit(0);
});
