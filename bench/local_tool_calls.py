"""Can the embedded model call tools? A probe, not a test: SmolLM2-135M in llama.cpp's server
engine (xllamacpp, as the embedded provider runs it), tools offered through its OpenAI-compatible
chat completions with the model's own chat template, on a fixed set of questions, greedy decoding.

Run: ``.venv/bin/python bench/local_tool_calls.py`` (about 30 s). It prints, per question, the
call the model made (or its text) and whether that is what a user would want, then the share
of useful answers. This is why the local provider reports ``supports_tools = False``
(docs/design.md, "Tools"): on 2026-12-03 it made the wanted call or answer for 2 of 8 (it
answered every question in text and called nothing; with llama-cpp-python's
``chatml-function-calling`` format on 2026-12-02 it was 2 of 8 too, with wrong calls).
"""

from __future__ import annotations

import json

import xllamacpp
from parley.providers.llm.engine import engine_params
from parley.providers.llm.local import default_model_path

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"],
            },
        },
    },
]

#: A wanted call: the tool's name, and for each argument the values that count as right.
Wanted = tuple[str, dict[str, set[str]]]

#: (question, the wanted call, or None when a text answer is wanted)
CASES: list[tuple[str, Wanted | None]] = [
    ("Hello, how are you?", None),
    ("Tell me a joke.", None),
    ("What is 17 plus 25?", ("add", {"a": {"17"}, "b": {"25"}})),
    ("Add 2 and 3", ("add", {"a": {"2"}, "b": {"3"}})),
    ("What's the weather like in Paris today?", ("get_weather", {"city": {"paris"}})),
    ("Weather in Oslo please", ("get_weather", {"city": {"oslo"}})),
    ("Use the tool to get the weather in Cairo.", ("get_weather", {"city": {"cairo"}})),
    ("كيف الطقس في القاهرة؟", ("get_weather", {"city": {"القاهرة", "cairo"}})),
]


def _useful(message: dict[str, object], wanted: Wanted | None) -> bool:
    calls = message.get("tool_calls") or []
    if wanted is None:
        return not calls and bool(str(message.get("content") or "").strip())
    if len(calls) != 1:  # type: ignore[arg-type]
        return False
    function = calls[0]["function"]  # type: ignore[index]
    try:
        arguments = json.loads(function["arguments"])
    except ValueError:
        return False
    name, expected = wanted
    if function["name"] != name or not isinstance(arguments, dict):
        return False
    return all(str(arguments.get(key, "")).lower() in values for key, values in expected.items())


def main() -> None:
    server = xllamacpp.Server(engine_params(default_model_path(), context_window=2048, parallel=1, threads=2))
    useful = 0
    for question, wanted in CASES:
        response = server.handle_chat_completions(
            {
                "messages": [{"role": "user", "content": question}],
                "tools": TOOLS,
                "tool_choice": "auto",
                "max_tokens": 60,
                "temperature": 0,
            }
        )
        if "error" in response:
            print(f"BAD  {question!r:45} -> error {response['error'].get('message')}")
            continue
        message = response["choices"][0]["message"]  # type: ignore[index]
        calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
        ok = _useful(message, wanted)  # type: ignore[arg-type]
        useful += ok
        answer = calls or repr((message.get("content") or "")[:60])
        print(f"{'ok ' if ok else 'BAD'}  {question!r:45} -> {answer}")
    print(f"useful: {useful} of {len(CASES)}")


if __name__ == "__main__":
    main()
