// Agents and sessions: the lists on the left, the forms that create them, and which one is
// open (kept in sessionStorage, so a reload comes back to the same session).

import * as api from "./api.js";
import { closeSession, openSession } from "./chat.js";
import { $, fail, h } from "./dom.js";
import * as store from "./store.js";

const state = { agents: [], agent: null, sessions: [], session: null };

export async function load() {
  state.agents = await api.listAgents();
  const saved = store.view.get() || {};
  const agent = state.agents.find((a) => a.name === saved.agent) || state.agents[0] || null;
  $("new-agent").open = state.agents.length === 0;
  await selectAgent(agent, saved.session);
}

function drawAgents() {
  $("agents").replaceChildren(...state.agents.map((agent) =>
    h("li", {}, h("button", {
      type: "button",
      "aria-current": agent.name === state.agent?.name ? "true" : false,
      onclick: () => selectAgent(agent).catch(fail),
    }, h("span", { dir: "auto" }, agent.displayName),
    h("small", {}, [agent.model || "default model", agent.language].filter(Boolean).join(" · "))))));
}

function drawSessions() {
  $("sessions").replaceChildren(...state.sessions.map((session) =>
    h("li", {}, h("button", {
      type: "button",
      "aria-current": session.name === state.session?.name ? "true" : false,
      onclick: () => selectSession(session).catch(fail),
    }, h("span", { dir: "auto" }, session.title || "Untitled session"),
    h("small", {}, new Date(session.createTime).toLocaleString())))));
  $("session-form").hidden = !state.agent;
}

async function selectAgent(agent, sessionName = null) {
  state.agent = agent;
  drawAgents();
  state.sessions = agent ? await api.listSessions(agent.name) : [];
  const session = state.sessions.find((s) => s.name === sessionName) || state.sessions[0] || null;
  await selectSession(session);
}

async function selectSession(session) {
  state.session = session;
  store.view.set({ agent: state.agent?.name, session: session?.name });
  drawSessions();
  if (session) await openSession(session);
  else closeSession();
}

async function createAgent(form) {
  const data = Object.fromEntries(new FormData(form));
  const agent = Object.fromEntries(Object.entries(data).filter(([, value]) => value.trim() !== ""));
  const created = await api.createAgent(agent);
  form.reset();
  $("new-agent").open = false;
  state.agents.push(created);
  await selectAgent(created);
}

async function createSession(form) {
  const created = await api.createSession({ agent: state.agent.name, title: form.elements.title.value.trim() });
  form.reset();
  state.sessions.unshift(created);
  await selectSession(created);
}

export function wire() {
  $("agent-form").addEventListener("submit", (event) => {
    event.preventDefault();
    createAgent(event.target).catch(fail);
  });
  $("session-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.agent) createSession(event.target).catch(fail);
  });
}
