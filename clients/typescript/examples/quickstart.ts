/**
 * Walks through the Parley API with the TypeScript client: registers a new user, logs in,
 * creates an agent and a session, sends a message and prints the reply as it streams in,
 * ending with a line `completed: <message name> (<n> output tokens)`.
 *
 *   PARLEY_SERVER=localhost:50051 npm run example
 */
import { randomBytes } from "node:crypto";

import { createParleyClient, describeError } from "../src/index.js";

async function main(): Promise<void> {
  const server = process.env.PARLEY_SERVER ?? "localhost:50051";
  const parley = createParleyClient({ server, timeoutMs: 5 * 60 * 1000 });

  const username = `ts-example-${randomBytes(5).toString("hex")}`;
  const password = "correct horse battery staple";
  const { user } = await parley.auth.createUser({ username, password });
  console.log(`registered: ${user?.name} (${username})`);

  const tokens = await parley.auth.createToken({ username, password });
  parley.setAccessToken(tokens.accessToken);
  console.log(`logged in: access token valid for ${tokens.expiresIn} s`);

  const { agent } = await parley.agents.createAgent({
    agent: { displayName: "Guide", instructions: "You are a concise, friendly guide." },
  });
  console.log(`agent: ${agent?.name}`);

  const { session } = await parley.sessions.createSession({
    session: { agent: agent?.name ?? "", title: "TypeScript example" },
  });
  console.log(`session: ${session?.name}`);

  const text = "Hello! In one sentence, what is a good name for a cat?";
  console.log(`you: ${text}`);
  // Read the stream to its end (message_completed is the last event): leaving the loop early
  // cancels the call.
  let completed = false;
  for await (const event of parley.chat.sendMessage({ session: session?.name ?? "", text })) {
    switch (event.event.case) {
      case "messageAccepted":
        process.stdout.write("agent: ");
        break;
      case "textDelta":
        process.stdout.write(event.event.value.text);
        break;
      case "messageCompleted": {
        const message = event.event.value.message;
        console.log(`\ncompleted: ${message?.name} (${message?.usage?.outputTokens ?? 0} output tokens)`);
        completed = true;
        break;
      }
      default:
        break;
    }
  }
  if (!completed) {
    throw new Error("the stream ended without message_completed");
  }
}

main().catch((error: unknown) => {
  console.error(`example: ${describeError(error)}`);
  process.exitCode = 1;
});
