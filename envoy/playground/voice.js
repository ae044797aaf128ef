// Voice: a recording from the microphone (MediaRecorder, WebM/Opus where the browser has it)
// sent as base64 (bytes in the proto3 JSON mapping), and the reply's audio chunks as a playable
// blob: URL.

const PREFERRED = "audio/webm;codecs=opus";
const TYPES = { AUDIO_FORMAT_OPUS: "audio/ogg", AUDIO_FORMAT_WAV: "audio/wav" };

export class Recorder {
  /** Asks for the microphone and starts recording. Rejects when there is none or it is refused. */
  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const options = MediaRecorder.isTypeSupported(PREFERRED) ? { mimeType: PREFERRED } : {};
    this.recorder = new MediaRecorder(this.stream, options);
    this.chunks = [];
    this.recorder.addEventListener("dataavailable", (e) => e.data.size && this.chunks.push(e.data));
    this.recorder.start(250);
    this.started = performance.now();
  }

  /** Seconds recorded so far. */
  get seconds() {
    return this.started ? (performance.now() - this.started) / 1000 : 0;
  }

  /** Stops recording and releases the microphone; resolves to the recording, a Blob. */
  stop() {
    return new Promise((resolve) => {
      this.recorder.addEventListener("stop", () => {
        for (const track of this.stream.getTracks()) track.stop();
        resolve(new Blob(this.chunks, { type: this.recorder.mimeType || PREFERRED }));
      });
      this.recorder.stop();
    });
  }
}

/** A Blob's bytes as base64. */
export async function toBase64(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** The AudioChunks of one stream (base64 `data`, concatenated in order: one file of their
 * `format`) as a blob: URL. */
export function audioUrl(chunks) {
  const parts = chunks.map((chunk) => Uint8Array.from(atob(chunk.data), (c) => c.charCodeAt(0)));
  const type = TYPES[chunks[0].format] || "audio/mpeg";
  return URL.createObjectURL(new Blob(parts, { type }));
}
