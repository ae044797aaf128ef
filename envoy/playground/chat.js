// The conversation on screen: the path of the session's active branch, the composer (text and
// voice), the reply being streamed, and the per-message actions that branch the tree (fork,
// edit, regenerate).

import * as api from "./api.js";
import { $, fail, h, notify } from "./dom.js";
import * as store from "./store.js";
import { follow } from "./stream.js";
import { branchLabel, renderTree } from "./tree.js";
import { Recorder, toBase64 } from "./voice.js";

const ROLES = { ROLE_USER: "You", ROLE_ASSISTANT: "Agent", ROLE_TOOL: "Tool" };
const STATUS = {
  STATUS_IN_PROGRESS: "writing…",
  STATUS_INCOMPLETE: "stopped",
  STATUS_FAILED: "failed",
  STATUS_REQUIRES_ACTION: "waiting for a tool",
};

const state = {
  session: null,
  branches: [],
  streaming: null, // the assistant message being streamed
  busy: false,
  audio: new Map(), // message name -> blob: URL of its reply audio
  play: null, // the message whose audio just arrived
  recorder: null,
};

/** Shows `session` (a Session resource) and picks up a reply still being written on it. */
export async function openSession(session) {
  state.session = session;
  $("chat-title").textContent = session.title || "Untitled session";
  setBusy(false);
  const messages = await reload();
  const last = messages.at(-1);
  if (last?.role === "ROLE_ASSISTANT" && last.status === "STATUS_IN_PROGRESS") {
    const saved = store.inflight.get();
    const from = saved?.message === last.name ? saved : { message: last.name, seq: 0, text: "" };
    setReplyText(from.message, from.text);
    stream(() => api.resumeStream(from.message, from.seq), from); // not awaited: it may take long
  }
}

export function closeSession() {
  state.session = null;
  $("chat-title").textContent = "No session";
  $("chat-branch").textContent = "";
  $("messages").replaceChildren();
  $("tree").replaceChildren();
  setBusy(false);
}

/** Re-reads the active branch's path and the branches; resolves to the messages. */
async function reload() {
  const name = state.session.name;
  const [messages, branches] = await Promise.all([api.listMessages(name), api.listBranches(name)]);
  if (state.session?.name !== name) return messages;
  state.branches = branches;
  const active = branches.find((b) => b.active);
  $("chat-branch").textContent = active ? `branch: ${branchLabel(active)}` : "";
  render(messages);
  await renderTree($("tree"), name, branches, switchBranch);
  return messages;
}

function render(messages) {
  const list = $("messages");
  list.replaceChildren(...messages.map(bubble));
  list.scrollTop = list.scrollHeight;
}

function bubble(message) {
  const user = message.role === "ROLE_USER";
  const status = STATUS[message.status];
  const audio = state.audio.get(message.name);
  const actions = message.status === "STATUS_IN_PROGRESS" ? [] : user
    ? [h("button", { type: "button", class: "quiet", onclick: () => startEdit(message) }, "Edit")]
    : message.role === "ROLE_ASSISTANT"
      ? [
          h("button", { type: "button", class: "quiet", onclick: () => fork(message) }, "Fork here"),
          h("button", { type: "button", class: "quiet", onclick: () => regenerate(message) }, "Regenerate"),
        ]
      : [];
  return h(
    "li",
    { class: `msg ${message.role.toLowerCase().replace("role_", "")}`, "data-name": message.name },
    h("div", { class: "meta" }, h("span", { class: "who" }, ROLES[message.role] || "?"),
      status ? h("span", { class: `badge ${message.status.toLowerCase()}` }, status) : null),
    h("div", { class: "text", dir: "auto" }, message.text),
    audio ? h("audio", { controls: true, src: audio, preload: "auto" }) : null,
    message.errorMessage ? h("div", { class: "error-text" }, message.errorMessage) : null,
    h("div", { class: "actions" }, actions),
  );
}

function find(name) {
  return name ? $("messages").querySelector(`li[data-name="${CSS.escape(name)}"]`) : null;
}

function setReplyText(name, text) {
  const item = find(name);
  if (!item) return;
  item.querySelector(".text").textContent = text;
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

// What follow() (stream.js) tells the view.
const view = {
  async accepted(accepted) {
    state.streaming = accepted.assistantMessage;
    $("stop").hidden = false;
    await reload();
  },
  transcript(userMessage, text) {
    const item = find(userMessage);
    if (item) item.querySelector(".text").textContent = text;
  },
  text: setReplyText,
  audio(message, url) {
    state.audio.set(message, url);
    state.play = message;
  },
  failed(status) {
    fail({ message: status.message || "the reply failed" });
  },
  paused() {
    notify("The reply waits for tool outputs, which the playground does not send.", { error: true });
  },
};

/** Runs one streamed call (`start` resolves to its SSE Response) with the composer locked. */
async function stream(start, from) {
  if (state.busy || !state.session) return;
  setBusy(true);
  const session = state.session.name;
  try {
    if (from) state.streaming = from.message;
    $("stop").hidden = !state.streaming;
    const final = await follow(await start(), session, view, from);
    if (final?.stopReason === "STOP_REASON_CANCELLED") notify("Reply stopped.");
  } catch (error) {
    fail(error);
  } finally {
    state.streaming = null;
    if (state.session?.name === session) await reload().catch(fail);
    setBusy(false); // after the reload: the composer opens on the conversation as stored
    const audio = find(state.play)?.querySelector("audio");
    state.play = null;
    audio?.play().catch(() => {}); // may be refused without a user gesture: the controls stay
  }
}

function setBusy(busy) {
  state.busy = busy;
  const open = Boolean(state.session);
  const form = $("composer");
  form.elements.text.disabled = !open;
  $("send").disabled = busy || !open;
  $("record").disabled = (busy && !state.recorder) || !open;
  $("stop").hidden = !busy || !state.streaming;
  form.classList.toggle("busy", busy);
}

export function send(text) {
  return stream(() => api.sendMessage(state.session.name, text));
}

async function fork(message) {
  try {
    const name = `fork ${state.branches.length}`;
    const branch = await api.createBranch(state.session.name, message.name, name);
    await api.setActiveBranch(state.session.name, branch.name);
    notify(`Forked: now on “${name}”.`);
    await reload();
  } catch (error) {
    fail(error);
  }
}

function regenerate(message) {
  return stream(() => api.regenerate(message.name));
}

// Editing a user message: a branch forked at its parent (empty for the first message), made
// active, and the new text sent to it. The old message stays on its branch.
function startEdit(message) {
  const item = find(message.name);
  if (!item || state.busy) return;
  const area = h("textarea", { dir: "auto", rows: 2, "aria-label": "Edited message" });
  area.value = message.text;
  const save = async () => {
    const text = area.value.trim();
    if (!text) return;
    try {
      const name = `edit ${state.branches.length}`;
      const branch = await api.createBranch(state.session.name, message.parent || "", name);
      await api.setActiveBranch(state.session.name, branch.name);
      await send(text);
    } catch (error) {
      fail(error);
    }
  };
  item.querySelector(".text").replaceWith(h("div", { class: "edit" }, area,
    h("div", { class: "row" },
      h("button", { type: "button", onclick: save }, "Save and send"),
      h("button", { type: "button", class: "quiet", onclick: () => reload().catch(fail) }, "Cancel"))));
  area.focus();
}

async function switchBranch(branch) {
  try {
    await api.setActiveBranch(state.session.name, branch);
    await reload();
  } catch (error) {
    fail(error);
  }
}

export async function stop() {
  if (!state.streaming) return;
  try {
    await api.cancelMessage(state.streaming);
  } catch (error) {
    fail(error);
  }
}

/** The Record button: the first press starts recording, the second sends it. */
export async function toggleRecording() {
  const button = $("record");
  if (!state.recorder) {
    const recorder = new Recorder();
    try {
      await recorder.start();
    } catch (error) {
      fail({ message: `No microphone: ${error.message}` });
      return;
    }
    state.recorder = recorder;
    button.textContent = "Stop and send";
    button.setAttribute("aria-pressed", "true");
    const tick = () => {
      if (state.recorder !== recorder) return;
      $("record-time").textContent = `recording ${recorder.seconds.toFixed(1)} s`;
      setTimeout(tick, 100);
    };
    tick();
    return;
  }
  const recorder = state.recorder;
  state.recorder = null;
  button.textContent = "Record voice";
  button.setAttribute("aria-pressed", "false");
  const blob = await recorder.stop();
  $("record-time").textContent = `sent ${(blob.size / 1024).toFixed(0)} KiB of ${blob.type}`;
  const audio = await toBase64(blob);
  await stream(() => api.sendVoiceMessage(state.session.name, audio));
}
