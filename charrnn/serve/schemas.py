"""The requests the server takes and the errors it gives, in OpenAI's shapes: a completion
request checked field by field (types, ranges, the server's caps), and ApiError, which becomes
{"error": {"message", "type", "param", "code"}} with its HTTP status.

Unknown fields are ignored, as vLLM and llama.cpp's server do; beside OpenAI's fields the
request may carry top_k, penalty_window and no_repeat (SampleConfig's, as `charrnn sample`
has them).
"""

import json
import math
from dataclasses import dataclass
from typing import Optional

from ..config import PENALTY_MAX, SEED_MAX

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


@dataclass
class CompletionRequest:
    model: Optional[str]
    prompts: list
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    stop: tuple = ()
    seed: Optional[int] = None
    stream: bool = False
    include_usage: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_window: int = 0
    no_repeat: int = 0
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


def _num(body, name, default, low, high, open_low=False):
    v = body.get(name, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ApiError(400, f"{name} must be a number, not {_show(v)}", name)
    if v > high or v < low or (open_low and v == low):
        where = f"({low}, {high}]" if open_low else f"[{low}, {high}]"
        raise ApiError(400, f"{name} must be in {where}, not {v}", name)
    return float(v)


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
        temperature=_num(body, "temperature", 1.0, 0.0, 100.0),
        top_p=_num(body, "top_p", 1.0, 0.0, 1.0, open_low=True),
        top_k=_int(body, "top_k", 0, 0, 1 << 20),
        n=_int(body, "n", 1, 1, limits.max_n),
        stop=_stops(body),
        seed=None if body.get("seed") is None else _int(body, "seed", 0, 0, SEED_MAX),
        stream=_bool(body, "stream"),
        include_usage=_bool(opts, "include_usage"),
        presence_penalty=_num(body, "presence_penalty", 0.0, -PENALTY_MAX, PENALTY_MAX),
        frequency_penalty=_num(body, "frequency_penalty", 0.0, -PENALTY_MAX, PENALTY_MAX),
        penalty_window=_int(body, "penalty_window", 0, 0, 1 << 20),
        no_repeat=_int(body, "no_repeat", 0, 0, 1 << 16),
        logprobs=logprobs,
        echo=echo,
    )
