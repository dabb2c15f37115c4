"""The requests the server takes and the errors it gives, in OpenAI's shapes: a completion
request checked field by field (types, ranges, the server's caps), and ApiError, which becomes
{"error": {"message", "type", "param", "code"}} with its HTTP status.

Unknown fields are ignored, as vLLM and llama.cpp's server do; beside OpenAI's fields the
request may carry top_k, penalty_window and no_repeat (SampleConfig's, as `charrnn sample`
has them).

How to draw travels as a SampleConfig (config.py), the carrier `charrnn sample` builds too:
SAMPLING maps the request's names onto its fields once, the JSON types are checked here,
and the ranges are SampleConfig's own validation (its words, with the request's names), plus
the few limits of the server's own that SAMPLING states.
"""

import json
import math
from dataclasses import dataclass, field, replace
from typing import Optional

from ..config import SampleConfig
from ..errors import UsageError

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
    500: "server_error",
}


class ApiError(Exception):
    def __init__(self, status, message, param=None, code=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self):
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status, message, param=None, code=None):
    return {
        "error": {
            "message": message,
            "type": TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


@dataclass(frozen=True)
class Limits:
    # fmt: off
    max_tokens: int = 4096   # the largest max_tokens a request may ask for
    max_n: int = 16          # the largest n
    max_prompts: int = 16    # prompts in one request
    max_prompt: int = 200_000  # characters in one prompt
    default_max_tokens: int = 256  # max_tokens when a request gives none (a paragraph;
                                   # OpenAI's 16 tokens are ~64 characters, a few words)
    # fmt: on


# The request's sampling fields: its name -> (SampleConfig's field, JSON type, the server's own
# upper limit beyond SampleConfig's rules, or None). The limits bound what one request may ask
# of a shared process: top_k and penalty_window past 2**20 and no_repeat past 2**16 only size
# memory; a temperature past 100 draws all but uniformly (OpenAI's API stops at 2; charrnn
# sample takes any). max_tokens, n and stop are not here: they are the request's own (see
# Limits), with OpenAI's meanings (max_tokens 0 with echo, up to 4 stop strings).
SAMPLING = {
    "temperature": ("temp", float, 100),
    "top_p": ("top_p", float, None),
    "top_k": ("top_k", int, 1 << 20),
    "seed": ("seed", int, None),
    "presence_penalty": ("presence_penalty", float, None),
    "frequency_penalty": ("frequency_penalty", float, None),
    "penalty_window": ("penalty_window", int, 1 << 20),
    "no_repeat": ("no_repeat", int, 1 << 16),
}


@dataclass
class CompletionRequest:
    model: Optional[str]
    prompts: list
    max_tokens: int = 16
    n: int = 1
    stop: tuple = ()
    sample: SampleConfig = field(default_factory=SampleConfig)  # how to draw (SAMPLING)
    stream: bool = False
    include_usage: bool = False
    logprobs: Optional[int] = None
    echo: bool = False


def parse_json(raw):
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _int(body, name, default, low, high):
    v = body.get(name, default)
    if v is None:
        v = default
    if isinstance(v, float) and v.is_integer() and math.isfinite(v):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError(400, f"{name} must be an integer, not {_show(v)}", name)
    if not low <= v <= high:
        raise ApiError(400, f"{name} must be in [{low}, {high}], not {v}", name)
    return v


def _num(body, name):
    v = body[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ApiError(400, f"{name} must be a number, not {_show(v)}", name)
    return float(v)


def _sample(body):
    """The SampleConfig of a request's sampling fields (SAMPLING), each checked by its JSON
    type, the server's limit, and SampleConfig's validation in the request's words."""
    given = {}
    for name, (to, kind, most) in SAMPLING.items():
        if body.get(name) is None:
            continue
        v = _num(body, name) if kind is float else _int(body, name, 0, -math.inf, math.inf)
        if most is not None and v > most:
            raise ApiError(400, f"{name} must be at most {most} on this server, not {v}", name)
        try:
            replace(SampleConfig(), **{to: v}).validate()
        except UsageError as e:
            raise ApiError(400, str(e).replace("--" + to.replace("_", "-"), name), name) from None
        given[to] = v
    return SampleConfig(**given)


def _bool(body, name):
    v = body.get(name, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise ApiError(400, f"{name} must be true or false, not {_show(v)}", name)
    return v


def _show(v):
    s = json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _prompts(body, limits):
    p = body.get("prompt", "")
    if p is None:
        p = ""
    if isinstance(p, str):
        p = [p]
    if not isinstance(p, list) or not p or not all(isinstance(s, str) for s in p):
        raise ApiError(
            400,
            "prompt must be a string or a non-empty list of strings (a "
            "character model takes text, not token ids)",
            "prompt",
        )
    if len(p) > limits.max_prompts:
        raise ApiError(400, f"at most {limits.max_prompts} prompts in one request", "prompt")
    if any(len(s) > limits.max_prompt for s in p):
        raise ApiError(400, f"a prompt is longer than {limits.max_prompt} characters", "prompt")
    return p


def _stops(body):
    s = body.get("stop")
    if s is None:
        return ()
    if isinstance(s, str):
        s = [s]
    if not isinstance(s, list) or len(s) > 4 or not all(isinstance(x, str) and x for x in s):
        raise ApiError(400, "stop must be a non-empty string or a list of up to 4 of them", "stop")
    return tuple(s)


def parse_completion(body, limits=Limits()):
    """The CompletionRequest of a decoded JSON body, or ApiError(400) naming the bad field."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "model must be a string", "model")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise ApiError(400, "stream_options must be an object", "stream_options")
    logprobs = body.get("logprobs")
    if logprobs is not None:
        logprobs = _int(body, "logprobs", 0, 0, 20)
    echo = _bool(body, "echo")
    return CompletionRequest(
        model=model,
        prompts=_prompts(body, limits),
        # 0 with echo: only the prompt, scored with logprobs (as OpenAI's legacy API does)
        max_tokens=_int(
            body,
            "max_tokens",
            min(limits.default_max_tokens, limits.max_tokens),
            0 if echo else 1,
            limits.max_tokens,
        ),
        n=_int(body, "n", 1, 1, limits.max_n),
        stop=_stops(body),
        sample=_sample(body),
        stream=_bool(body, "stream"),
        include_usage=_bool(opts, "include_usage"),
        logprobs=logprobs,
        echo=echo,
    )
