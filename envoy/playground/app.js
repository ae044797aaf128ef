// The playground's entry point: the login screen, then agents, sessions and the chat.

import * as api from "./api.js";
import * as chat from "./chat.js";
import { $, fail, notify } from "./dom.js";
import * as sidebar from "./sidebar.js";
import * as store from "./store.js";

function showAuth() {
  $("app").hidden = true;
  $("account").hidden = true;
  $("auth").hidden = false;
  chat.closeSession();
  $("auth-form").elements.username.focus();
}

async function showApp() {
  $("auth").hidden = true;
  $("app").hidden = false;
  $("account").hidden = false;
  $("whoami").textContent = store.tokens.get()?.username || "";
  await sidebar.load();
}

async function authenticate(event) {
  event.preventDefault();
  const form = event.target;
  const { username, password } = Object.fromEntries(new FormData(form));
  try {
    if (event.submitter?.value === "register") {
      await api.register(username, password);
      notify(`Account “${username}” created.`);
    }
    await api.login(username, password);
    form.reset();
    await showApp();
  } catch (error) {
    fail(error);
  }
}

function wire() {
  $("auth-form").addEventListener("submit", authenticate);
  $("logout").addEventListener("click", async () => {
    await api.logout();
    store.view.set(null);
    store.inflight.set(null);
    showAuth();
  });
  api.onLoggedOut(() => {
    notify("Your session has ended: please log in again.", { error: true });
    showAuth();
  });
  const composer = $("composer");
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const box = composer.elements.text;
    const text = box.value.trim();
    if (!text || $("send").disabled) return;
    box.value = "";
    chat.send(text);
  });
  composer.elements.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => chat.stop());
  $("record").addEventListener("click", () => chat.toggleRecording());
  sidebar.wire();
}

wire();
if (store.tokens.get()) showApp().catch(fail);
else showAuth();
