// The REST/JSON API of this server (Envoy's transcoding of the parley.v1 protos; docs/api.md),
// with bearer tokens from sessionStorage. A 401 is answered by one refresh (RefreshToken, POST
// /v1/tokens:refresh) and a retry; refresh tokens are single-use, so concurrent calls share one
// refresh. When the refresh fails too, the tokens are dropped and onLoggedOut listeners run.

import * as store from "./store.js";

/** A failed call: `status` (HTTP), `code` (gRPC), `reason` (the ErrorInfo reason), `message`. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code ?? 0;
    const info = (body?.details || []).find((d) => String(d["@type"]).endsWith("google.rpc.ErrorInfo"));
    this.reason = info?.reason || "";
  }
}

const loggedOut = [];
/** fn(error) runs when the session's tokens stop working. */
export function onLoggedOut(fn) {
  loggedOut.push(fn);
}

let refreshing = null;

function refresh() {
  const current = store.tokens.get();
  if (!current?.refreshToken) return Promise.resolve(false);
  refreshing ??= (async () => {
    const response = await fetch("/v1/tokens:refresh", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refreshToken: current.refreshToken }),
    });
    if (!response.ok) return false;
    const pair = await response.json();
    store.tokens.set({ ...current, accessToken: pair.accessToken, refreshToken: pair.refreshToken });
    return true;
  })()
    .catch(() => false)
    .finally(() => (refreshing = null));
  return refreshing;
}

/** One call. Resolves to the parsed JSON body, or with `stream` to the Response (its body is
 * Server-Sent Events: see sse.js). Rejects with ApiError. */
async function call(method, path, { body, query, stream = false, auth = true } = {}) {
  const search = new URLSearchParams(query || {}).toString();
  const url = search ? `${path}?${search}` : path;
  for (let attempt = 0; ; attempt++) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    const token = store.tokens.get()?.accessToken;
    if (auth && token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.ok) return stream ? response : response.json();
    if (response.status === 401 && auth && attempt === 0 && (await refresh())) continue;
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      // not JSON: keep the HTTP status alone
    }
    const error = new ApiError(response.status, payload);
    if (response.status === 401 && auth) {
      error.loggedOut = true; // the listeners tell the user: callers need not
      store.tokens.set(null);
      for (const fn of loggedOut) fn(error);
    }
    throw error;
  }
}

/** Every item of a paginated List method (AIP-158), following nextPageToken. */
async function listAll(path, field, query = {}) {
  const items = [];
  let pageToken = "";
  do {
    const page = await call("GET", path, { query: pageToken ? { ...query, pageToken } : query });
    items.push(...(page[field] || []));
    pageToken = page.nextPageToken;
  } while (pageToken);
  return items;
}

export async function register(username, password) {
  return call("POST", "/v1/users", { body: { username, password }, auth: false });
}

export async function login(username, password) {
  const pair = await call("POST", "/v1/tokens", { body: { username, password }, auth: false });
  store.tokens.set({ username, accessToken: pair.accessToken, refreshToken: pair.refreshToken });
}

/** Revokes the refresh token (its whole family) and forgets both tokens. */
export async function logout() {
  const current = store.tokens.get();
  store.tokens.set(null);
  if (current?.refreshToken) {
    await call("POST", "/v1/tokens:revoke", { body: { refreshToken: current.refreshToken }, auth: false })
      .catch(() => {});
  }
}

export const listAgents = () => listAll("/v1/agents", "agents");
export const createAgent = async (agent) => (await call("POST", "/v1/agents", { body: agent })).agent;
export const listSessions = (agent) => listAll("/v1/sessions", "sessions", { agent });
export const createSession = async (session) => (await call("POST", "/v1/sessions", { body: session })).session;
export const getSession = async (name) => (await call("GET", `/v1/${name}`)).session;

/** The path to the head of `branch` (default: the active branch), oldest first. */
export const listMessages = (session, branch = "") =>
  listAll(`/v1/${session}/messages`, "messages", branch ? { branch } : {});
export const listBranches = (session) => listAll(`/v1/${session}/branches`, "branches");
export const createBranch = async (session, fromMessage, displayName) =>
  (await call("POST", `/v1/${session}/branches`, { body: { fromMessage, displayName } })).branch;
export const setActiveBranch = async (session, branch) =>
  (await call("POST", `/v1/${session}:setActiveBranch`, { body: { branch } })).session;

// Replies are sent with background: true, so that reloading the page does not cancel them: the
// page picks them up again with ResumeStream, and Stop cancels them (CancelMessage).
export const sendMessage = (session, text) =>
  call("POST", `/v1/${session}:sendMessage`, { body: { text, background: true }, stream: true });
export const sendVoiceMessage = (session, audio) =>
  call("POST", `/v1/${session}:sendVoiceMessage`, { body: { audio, background: true }, stream: true });
export const regenerate = (message) =>
  call("POST", `/v1/${message}:regenerate`, { body: { background: true }, stream: true });
export const resumeStream = (message, startingAfter) =>
  call("GET", `/v1/${message}:stream`, { query: { startingAfter }, stream: true });
export const cancelMessage = async (message) => (await call("POST", `/v1/${message}:cancel`, { body: {} })).message;
