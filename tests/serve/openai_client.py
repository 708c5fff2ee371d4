#!/usr/bin/env python3
"""Drives `train-vector serve` with the official `openai` Python package.

Usage: openai_client.py URL

URL is the server's root (as `train-vector serve` prints it, e.g. http://127.0.0.1:39121).
The API key comes from $TRAIN_VECTOR_API_KEY (default "none", which a server without
`--api-key` ignores).

It lists the models, runs a greedy steered text completion and a greedy steered chat
completion, each once whole and once streamed, checks that the streamed text equals the
whole one, and checks that an unknown vector name is refused with a 4xx error. On success it
prints one JSON object on stdout and exits 0:

  {"models": [...], "completion": "...", "completion_stream": "...",
   "chat": "...", "chat_stream": "...", "error_status": 404}

On any failure it prints the reason on stderr and exits 1.
"""

import json
import os
import sys

PROMPT = "Mira put the red ball in the basket"
STEERING = [{"vector": "tom", "multiplier": 1.0}]
MAX_TOKENS = 8


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def completion_text(response):
    check(response.choices, "the completion has no choices")
    return response.choices[0].text or ""


def stream_text(stream, chat):
    """Concatenates the streamed pieces; checks that exactly one chunk ends the stream."""
    pieces = []
    finishes = []
    for chunk in stream:
        for choice in chunk.choices:
            if chat:
                piece = choice.delta.content if choice.delta is not None else None
            else:
                piece = choice.text
            if piece:
                pieces.append(piece)
            if choice.finish_reason is not None:
                finishes.append(choice.finish_reason)
    check(
        len(finishes) == 1,
        f"the stream should end with one finish reason, got {finishes!r}",
    )
    check(finishes[0] in ("stop", "length"), f"unexpected finish reason {finishes[0]!r}")
    return "".join(pieces)


def run(url):
    import openai
    from openai import OpenAI

    client = OpenAI(
        base_url=url.rstrip("/") + "/v1",
        api_key=os.environ.get("TRAIN_VECTOR_API_KEY", "none"),
        max_retries=0,
        timeout=60.0,
    )

    models = [m.id for m in client.models.list()]
    check(models, "GET /v1/models listed no model")
    model = models[0]

    common = dict(
        model=model,
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_body={"steering": STEERING},
    )

    whole = client.completions.create(prompt=PROMPT, **common)
    completion = completion_text(whole)
    check(
        whole.choices[0].finish_reason in ("stop", "length"),
        f"unexpected finish reason {whole.choices[0].finish_reason!r}",
    )
    check(
        whole.usage is not None and whole.usage.completion_tokens >= 1,
        f"the completion's usage is wrong: {whole.usage!r}",
    )
    completion_stream = stream_text(
        client.completions.create(prompt=PROMPT, stream=True, **common), chat=False
    )
    check(
        completion_stream == completion,
        f"the streamed completion {completion_stream!r} differs from the whole one {completion!r}",
    )

    messages = [{"role": "user", "content": "Hi"}]
    chat_whole = client.chat.completions.create(messages=messages, **common)
    check(chat_whole.choices, "the chat completion has no choices")
    message = chat_whole.choices[0].message
    check(message.role == "assistant", f"the chat message's role is {message.role!r}")
    chat = message.content or ""
    chat_stream = stream_text(
        client.chat.completions.create(messages=messages, stream=True, **common), chat=True
    )
    check(
        chat_stream == chat,
        f"the streamed chat completion {chat_stream!r} differs from the whole one {chat!r}",
    )

    # Greedy steered output of the tiny fixture is not empty for these prompts; an empty text
    # would make the comparisons above say nothing.
    check(completion, "the steered completion is empty")
    check(chat, "the steered chat completion is empty")

    try:
        client.completions.create(
            model=model,
            prompt=PROMPT,
            max_tokens=MAX_TOKENS,
            temperature=0,
            extra_body={"steering": [{"vector": "no-such-vector", "multiplier": 1.0}]},
        )
    except (openai.NotFoundError, openai.BadRequestError) as e:
        error_status = e.status_code
        body = e.body if isinstance(e.body, dict) else {}
        check(
            "no-such-vector" in str(body.get("message", "")) or "no-such-vector" in str(e),
            f"the error does not name the unknown vector: {e}",
        )
    else:
        raise Failure("an unknown vector name was accepted")

    return {
        "models": models,
        "completion": completion,
        "completion_stream": completion_stream,
        "chat": chat,
        "chat_stream": chat_stream,
        "error_status": error_status,
    }


def main(argv):
    if len(argv) != 2:
        print("usage: openai_client.py URL", file=sys.stderr)
        return 1
    try:
        result = run(argv[1])
    except Failure as e:
        print(f"openai_client: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # the openai package's errors, connection errors, a missing package
        print(f"openai_client: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
