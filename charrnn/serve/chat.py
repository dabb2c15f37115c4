"""OpenAI's chat completions over a character model: the messages written as text by the
model's chat template (template.py), completed as a completion request is (calls.Call), and
answered in the chat shapes: `message` and `delta`, logprobs as `content` entries,
`chat.completion` and `chat.completion.chunk` objects.

The request takes the completion fields that have the same meaning in chat (`n`, `stop`,
`seed`, `temperature`, `top_p`, the penalties, `stream`, `stream_options`, and charrnn's
`top_k`, `penalty_window`, `no_repeat`), `max_completion_tokens` or `max_tokens`, and
`logprobs: true` with `top_logprobs` (0 to 20).
"""

import json

from ..completion import check_stop, prepare_prime
from ..errors import CharrnnError, UsageError
from .calls import Call
from .schemas import ApiError, Limits, parse_completion

ROLES = ("system", "developer", "user", "assistant", "tool")


def _content(m, i):
    """The text of message i's content: a string, null, or a list of text parts."""
    c = m.get("content")
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, list) and all(isinstance(p, dict) for p in c):
        if all(p.get("type") == "text" and isinstance(p.get("text"), str) for p in c):
            return "".join(p["text"] for p in c)
        raise ApiError(400, f"messages[{i}]: a character model reads text parts only", "messages")
    raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts", "messages")


def messages_of(body):
    """[(role, name or None, content)] of a chat request's messages, or ApiError(400)."""
    ms = body.get("messages")
    if not isinstance(ms, list) or not ms or not all(isinstance(m, dict) for m in ms):
        raise ApiError(400, "messages must be a non-empty list of objects", "messages")
    out = []
    for i, m in enumerate(ms):
        role, name = m.get("role"), m.get("name")
        if role not in ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}", "messages")
        if name is not None and not isinstance(name, str):
            raise ApiError(400, f"messages[{i}].name must be a string", "messages")
        out.append((role, name or None, _content(m, i)))
    return out


def parse_chat(body, template, limits=None):
    """The CompletionRequest of a chat request's decoded JSON body: the messages rendered by
    template as its one prompt, the template's stop strings after the request's."""
    if "prompt" in body or "echo" in body:
        body = {k: v for k, v in body.items() if k not in ("prompt", "echo")}
    prompt = template.render(messages_of(body))
    lp = body.get("logprobs")
    if lp is not None and not isinstance(lp, bool):
        raise ApiError(400, "logprobs must be true or false in a chat request", "logprobs")
    top = body.get("top_logprobs")
    if top is not None and not lp:
        raise ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs")
    which = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    flat = dict(body, prompt=prompt, max_tokens=body.get(which))
    flat["logprobs"] = (0 if top is None else top) if lp else None
    try:
        req = parse_completion(flat, limits or Limits())
    except ApiError as e:
        if e.param == "logprobs":
            e.param, e.message = "top_logprobs", e.message.replace("logprobs", "top_logprobs")
        elif e.param == "max_tokens" and which != "max_tokens":
            e.param, e.message = which, e.message.replace("max_tokens", which)
        raise
    req.stop = tuple(dict.fromkeys(req.stop + template.stop))
    return req


def check_template(template, model, name):
    """UsageError when model name cannot read or write what template writes around messages."""
    text = template.render([(r, None, "") for r in ("system", "user", "assistant", "user")])
    try:
        prepare_prime(model, text, "error")
        for s in template.stop:
            check_stop(model, s)
    except CharrnnError as e:
        msg = str(e).replace("the prime", "its text").split("; pass")[0].replace("--stop", "stop")
        raise UsageError(
            f"chat template {template.source} does not suit model {name}: {msg} "
            "(--chat-template plain writes only the messages)"
        ) from None


def chat_logprobs(lp):
    """OpenAI's chat logprobs of a completion's logprobs lists (None stays None)."""
    if lp is None:
        return None

    def entry(token, logprob):
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8", "replace"))}

    content = [
        dict(entry(t, v), top_logprobs=[entry(a, b) for a, b in (top or {}).items()])
        for t, v, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"])
    ]
    return {"content": content, "refusal": None}


class ChatCall(Call):
    """One chat request: a Call over its rendered prompt, answering in the chat shapes."""

    chunk_object = "chat.completion.chunk"

    def __init__(self, req, served, settings):
        try:
            super().__init__(req, served, settings)
        except ApiError as e:
            if e.param == "prompt":
                e.param = "messages"
                e.message = e.message.replace("the prompt", "the messages (as the chat template writes them)")
            raise
        self.id = "chatcmpl-" + self.id.partition("-")[2]
        self.began_rows = set()

    async def whole(self, request):
        body = await super().whole(request)
        body["object"] = "chat.completion"
        body["choices"] = [
            {
                "index": c["index"],
                "message": {"role": "assistant", "content": c["text"]},
                "logprobs": chat_logprobs(c["logprobs"]),
                "finish_reason": c["finish_reason"],
            }
            for c in body["choices"]
        ]
        return body

    def _chunk(self, j, text, why=None, logprobs=None):
        delta = {"content": text}
        if j not in self.began_rows:
            self.began_rows.add(j)
            delta = {"role": "assistant", "content": text}
        choice = {"index": j, "delta": delta, "logprobs": chat_logprobs(logprobs), "finish_reason": why}
        body = {
            "id": self.id,
            "object": self.chunk_object,
            "created": self.created,
            "model": self.served.name,
            "choices": [choice],
        }
        return "data: " + json.dumps(body) + "\n\n"
