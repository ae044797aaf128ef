// The session's tree of messages, drawn from its branches: the path of every branch
// (ListMessages with `branch`), merged by parent pointers. Each branch is a button at its head
// message; pressing it switches to that branch (SetActiveBranch). The active branch's path is
// highlighted.

import * as api from "./api.js";
import { h } from "./dom.js";

const ROLES = { ROLE_USER: "You", ROLE_ASSISTANT: "Agent", ROLE_TOOL: "Tool" };

function push(map, key, value) {
  if (!map.has(key)) map.set(key, []);
  map.get(key).push(value);
}

/** What a branch is called on screen: its display name, else its id. */
export function branchLabel(branch) {
  return branch.displayName || branch.name.split("/").at(-1);
}

/** Draws the tree of `session` (its `branches`, as ListBranches gives them) into `container`;
 * `onSwitch(branchName)` runs when a branch is chosen. */
export async function renderTree(container, session, branches, onSwitch) {
  const paths = await Promise.all(branches.map((b) => (b.head ? api.listMessages(session, b.name) : [])));
  const nodes = new Map();
  const children = new Map();
  const heads = new Map();
  const onPath = new Set();
  branches.forEach((branch, i) => {
    for (const message of paths[i]) {
      nodes.set(message.name, message);
      if (branch.active) onPath.add(message.name);
    }
    push(heads, branch.head || "", branch);
  });
  for (const message of nodes.values()) push(children, message.parent || "", message);

  const chip = (branch) =>
    h("button", {
      type: "button",
      class: `branch${branch.active ? " active" : ""}`,
      "aria-pressed": branch.active ? "true" : "false",
      title: branch.active ? "the active branch" : "switch to this branch",
      onclick: () => !branch.active && onSwitch(branch.name),
    }, branchLabel(branch));

  const draw = (parent) => {
    const kids = (children.get(parent) || []).sort((a, b) => (a.name < b.name ? -1 : 1));
    if (!kids.length) return null;
    return h("ul", {}, kids.map((message) =>
      h("li", { class: onPath.has(message.name) ? "on-path" : "", "data-name": message.name },
        h("div", { class: "node" },
          h("span", { class: "who" }, ROLES[message.role] || "?"),
          h("span", { class: "snippet", dir: "auto" }, snippet(message.text)),
          (heads.get(message.name) || []).map(chip)),
        draw(message.name))));
  };
  const empty = heads.get("") || [];
  container.replaceChildren(
    empty.length ? h("div", { class: "node root" }, h("span", { class: "who" }, "start"), empty.map(chip)) : "",
    draw("") || "",
  );
}

function snippet(text) {
  const line = (text || "…").replace(/\s+/g, " ").trim();
  return line.length > 48 ? `${line.slice(0, 47)}…` : line;
}
