// What the playground keeps across a page reload: sessionStorage of this tab only (never cookies,
// never localStorage), as JSON under three keys.
//   tokens    {username, accessToken, refreshToken}
//   view      {agent, session}: the agent and session on screen
//   inflight  {session, message, seq, text}: the reply being streamed, the sequence number of the
//             last event seen and the text so far, so a reload resumes it with ResumeStream

const KEYS = { tokens: "parley.tokens", view: "parley.view", inflight: "parley.inflight" };

function slot(key) {
  return {
    get() {
      try {
        return JSON.parse(sessionStorage.getItem(key));
      } catch {
        return null;
      }
    },
    set(value) {
      if (value == null) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, JSON.stringify(value));
    },
  };
}

export const tokens = slot(KEYS.tokens);
export const view = slot(KEYS.view);
export const inflight = slot(KEYS.inflight);
