// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, so the
// playground reads the response body itself. Envoy sends one ChatEvent per event, as
// `id: <sequence number>` and `data: <JSON>` lines ended by a blank line.

/** The JSON objects of an SSE response body, as they arrive (an async iterator). Leaving the
 * loop early cancels the body. */
export async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let done = false;
  try {
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      buffer += chunk.value;
      for (let end = buffer.search(/\r?\n\r?\n/); end >= 0; end = buffer.search(/\r?\n\r?\n/)) {
        const event = parse(buffer.slice(0, end));
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        if (event) yield event;
      }
    }
    done = true;
    const last = parse(buffer);
    if (last) yield last;
  } finally {
    if (!done) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

function parse(block) {
  const data = block
    .split(/\r?\n/)
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).replace(/^ /, ""));
  return data.length ? JSON.parse(data.join("\n")) : null;
}

/** The payload's name of a ChatEvent: "textDelta", "messageCompleted" ... */
export function kindOf(event) {
  return Object.keys(event).find((key) => key !== "sequenceNumber");
}
