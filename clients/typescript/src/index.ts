/**
 * TypeScript client for Parley: the generated messages and services of `parley.v1`
 * (protobuf-es v2, in ./gen), clients for them over Connect's gRPC transport for Node
 * (HTTP/2), a bearer-token interceptor, and the `google.rpc.ErrorInfo` of a failed call.
 *
 * ```ts
 * const parley = createParleyClient({ server: "localhost:50051" });
 * const tokens = await parley.auth.createToken({ username, password });
 * parley.setAccessToken(tokens.accessToken);
 * const { agent } = await parley.agents.createAgent({ agent: { displayName: "Guide" } });
 * ```
 */
import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { type ErrorInfo, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { AgentService } from "./gen/parley/v1/agent_service_pb.js";
import { AuthService } from "./gen/parley/v1/auth_service_pb.js";
import { BranchService } from "./gen/parley/v1/branch_service_pb.js";
import { ChatService } from "./gen/parley/v1/chat_service_pb.js";
import { SessionService } from "./gen/parley/v1/session_service_pb.js";

export * from "./gen/parley/v1/agent_service_pb.js";
export * from "./gen/parley/v1/auth_service_pb.js";
export * from "./gen/parley/v1/branch_service_pb.js";
export * from "./gen/parley/v1/chat_service_pb.js";
export * from "./gen/parley/v1/common_pb.js";
export * from "./gen/parley/v1/session_service_pb.js";
export { type ErrorInfo, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";

/** The ErrorInfo domain of every error Parley itself reports. */
export const ERROR_DOMAIN = "parley.dev";

export interface ParleyClientOptions {
  /** `host:port` (plaintext HTTP/2) or a base URL (`http://…`, `https://…`). */
  server: string;
  /** Access token sent as `authorization: Bearer …` on every call; settable later. */
  accessToken?: string;
  /** Deadline of each call, in milliseconds (none by default). */
  timeoutMs?: number;
}

export interface ParleyClient {
  auth: Client<typeof AuthService>;
  agents: Client<typeof AgentService>;
  sessions: Client<typeof SessionService>;
  chat: Client<typeof ChatService>;
  branches: Client<typeof BranchService>;
  /** Replace the access token (after AuthService.CreateToken or RefreshToken). */
  setAccessToken(token: string | undefined): void;
}

/** Turns `host:port` into `http://host:port`; leaves URLs alone. */
export function baseUrl(server: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(server) ? server : `http://${server}`;
}

/** Clients of every Parley service over one HTTP/2 connection. */
export function createParleyClient(options: ParleyClientOptions): ParleyClient {
  let accessToken = options.accessToken;
  const bearer: Interceptor = (next) => (request) => {
    if (accessToken !== undefined && !request.header.has("authorization")) {
      request.header.set("authorization", `Bearer ${accessToken}`);
    }
    return next(request);
  };
  const transport = createGrpcTransport({
    baseUrl: baseUrl(options.server),
    interceptors: [bearer],
    defaultTimeoutMs: options.timeoutMs,
  });
  return {
    auth: createClient(AuthService, transport),
    agents: createClient(AgentService, transport),
    sessions: createClient(SessionService, transport),
    chat: createClient(ChatService, transport),
    branches: createClient(BranchService, transport),
    setAccessToken(token) {
      accessToken = token;
    },
  };
}

/** The `google.rpc.ErrorInfo` of a failed call (reason such as `RESOURCE_NOT_FOUND`), if any. */
export function errorInfo(error: unknown): ErrorInfo | undefined {
  return ConnectError.from(error).findDetails(ErrorInfoSchema)[0];
}

/** `"NOT_FOUND RESOURCE_NOT_FOUND: agent not found"`-style summary of a failed call. */
export function describeError(error: unknown): string {
  const err = ConnectError.from(error);
  const reason = errorInfo(err)?.reason;
  const code = Code[err.code] ?? String(err.code);
  return `${code}${reason ? ` ${reason}` : ""}: ${err.rawMessage}`;
}
