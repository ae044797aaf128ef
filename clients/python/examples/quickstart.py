"""Walk through the Parley API with the Python SDK: register a new user, log in, create an agent
and a session, send a message and print the reply as it streams in, ending with a line
``completed: <message name> (<n> output tokens)``.

    PARLEY_SERVER=localhost:50051 python clients/python/examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import secrets
import sys

from parley_client import ParleyClient, ParleyError


async def main() -> int:
    username = f"py-example-{secrets.token_hex(5)}"
    password = "correct horse battery staple"
    async with ParleyClient() as parley:  # $PARLEY_SERVER, or localhost:50051
        user = await parley.register(username, password)
        print(f"registered: {user.name} ({username})")

        tokens = await parley.login(username, password)
        print(f"logged in: access token valid for {tokens.expires_in} s")

        agent = await parley.create_agent("Guide", instructions="You are a concise, friendly guide.")
        print(f"agent: {agent.name}")

        session = await parley.create_session(agent.name, title="Python example")
        print(f"session: {session.name}")

        text = "Hello! In one sentence, what is a good name for a cat?"
        print(f"you: {text}")
        async for event in parley.send_message(session.name, text):
            match event.WhichOneof("event"):
                case "message_accepted":
                    print("agent: ", end="", flush=True)
                case "text_delta":
                    print(event.text_delta.text, end="", flush=True)
                case "message_completed":
                    message = event.message_completed.message
                    print(f"\ncompleted: {message.name} ({message.usage.output_tokens} output tokens)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except ParleyError as exc:
        print(f"example: {exc}", file=sys.stderr)
        sys.exit(1)
