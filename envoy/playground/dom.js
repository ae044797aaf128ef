// Tiny DOM helpers: an element builder and the notice bar.

/** h("button", {class: "x", onclick: f}, "text", child...): a new element. Attributes whose
 * value is false or null are left out; `on*` functions become event listeners. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((child) => child != null && child !== false));
  return element;
}

const $ = (id) => document.getElementById(id);
export { $ };

let noticeTimer = 0;

/** Shows a message in the notice bar (errors stay until the next notice or a click). */
export function notify(text, { error = false } = {}) {
  const bar = $("notice");
  bar.textContent = text;
  bar.classList.toggle("error", error);
  bar.hidden = false;
  clearTimeout(noticeTimer);
  if (!error) noticeTimer = setTimeout(() => (bar.hidden = true), 4000);
  bar.onclick = () => (bar.hidden = true);
}

/** notify() for an error: an ApiError shows its reason and message. */
export function fail(error) {
  if (error.loggedOut) return; // onLoggedOut listeners said so already
  console.error(error);
  const reason = error.reason ? `${error.reason}: ` : "";
  notify(`${reason}${error.message || error}`, { error: true });
}
