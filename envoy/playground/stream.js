// Follows one reply's stream of ChatEvents (docs/api.md, "ChatEvent") into the chat view, and
// records where it is in sessionStorage after every event: {session, message, seq, text}. A
// page reloaded mid-reply finds that record and resumes with ResumeStream after `seq`, showing
// `text` at once (the events after `seq` complete it exactly).

import { kindOf, readEvents } from "./sse.js";
import * as store from "./store.js";
import { audioUrl } from "./voice.js";

/**
 * Reads `response` (an SSE Response of SendMessage, SendVoiceMessage, RegenerateMessage or
 * ResumeStream) to its end. `from` says where a resumed stream starts: {message, seq, text}.
 * `view` gets the changes:
 *   accepted(event.messageAccepted)  the user message is stored (re-read the conversation)
 *   transcript(userMessage, text)    what was heard, for a voice message
 *   text(message, text)              the reply's text so far
 *   audio(message, url)              the reply's speech, a blob: URL (streams from the start only)
 *   failed(status)                   an `error` event (a google.rpc.Status)
 *   paused(requiresAction)           the reply waits for tool outputs (not offered here)
 * Resolves to the final Message (messageCompleted), or null if the stream ended without one.
 * The sessionStorage record is dropped once the stream has ended for good (completed, failed,
 * paused); a stream that broke off keeps it, so a reload can still resume.
 */
export async function follow(response, session, view, from = { message: null, seq: 0, text: "" }) {
  let { message, seq, text } = from;
  let userMessage = null;
  let final = null;
  let ended = false;
  const chunks = [];
  for await (const event of readEvents(response)) {
    seq = Number(event.sequenceNumber);
    const kind = kindOf(event);
    const payload = event[kind];
    if (kind === "messageAccepted") {
      message = payload.assistantMessage;
      userMessage = payload.userMessage?.name;
      text = "";
      store.inflight.set({ session, message, seq, text });
      await view.accepted(payload);
    } else if (kind === "transcript") {
      view.transcript(userMessage, payload.text);
    } else if (kind === "textDelta") {
      text += payload.text;
      view.text(message, text);
    } else if (kind === "audioChunk") {
      chunks.push(payload);
    } else if (kind === "messageCompleted") {
      final = payload.message;
      text = final.text;
      ended = true;
      view.text(message, text);
    } else if (kind === "error") {
      ended = true;
      view.failed(payload);
    } else if (kind === "requiresAction") {
      ended = true;
      view.paused(payload);
    }
    if (message) store.inflight.set({ session, message, seq, text });
  }
  if (ended) store.inflight.set(null);
  // Audio chunks concatenate into one file only from the first one on.
  if (chunks.length && from.seq === 0) view.audio(message, audioUrl(chunks));
  return final;
}
