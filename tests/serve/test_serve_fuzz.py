"""Thousands of random, mistyped and truncated requests: every answer is below 500, a JSON
error in OpenAI's shape when it is an error, nothing is logged as a fault, and an ordinary
request works afterwards."""

import asyncio
import json
import logging
import random

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from serve_util import VOCAB, app_of, tiny_model  # noqa: E402

FIELDS = [
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "stream",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "echo",
    "top_k",
    "no_repeat",
    "penalty_window",
    "stream_options",
    "suffix",
    "best_of",
]


def value(rng, depth=0):
    kinds = [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.choice([0, 1, 2, 3, -1, 5, 17, 10**30, -(10**30), 2**63]),
        lambda: rng.choice([0.0, 0.5, 1.0, -0.5, 1.5, 2.5, 1e308, -1e-9, 1e-300]),
        lambda: "".join(rng.choice(VOCAB + "Zé€\u0000\ud800") for _ in range(rng.randrange(6))),
        lambda: rng.choice(["tiny", "other", "", "nope"]),
        lambda: rng.choice([float("nan"), float("inf"), float("-inf")]),
    ]
    if depth < 2:
        kinds += [
            lambda: [value(rng, depth + 1) for _ in range(rng.randrange(4))],
            lambda: {rng.choice(FIELDS + ["x"]): value(rng, depth + 1) for _ in range(rng.randrange(3))},
        ]
    return rng.choice(kinds)()


def sane(rng):
    """A request that is often valid: small values of the right types, with one field off."""
    body = {
        "model": "tiny",
        "prompt": "".join(rng.choice(VOCAB) for _ in range(rng.randrange(9))),
        "max_tokens": rng.randrange(1, 6),
        "temperature": rng.choice([0, 0.5, 1.0]),
        "n": rng.randrange(1, 4),
        "stream": rng.random() < 0.2,
        "logprobs": rng.choice([None, 0, 2]),
        "echo": rng.random() < 0.3,
        "stop": rng.choice([None, "a", ["b", "c"]]),
        "seed": rng.choice([None, 1, 7]),
        "presence_penalty": rng.choice([0, 0.5]),
        "no_repeat": rng.choice([0, 3]),
    }
    if rng.random() < 0.7:
        body[rng.choice(FIELDS)] = value(rng)
    return body


def test_fuzz(caplog):
    app, reg = app_of(("tiny", tiny_model(0)), ("other", tiny_model(1, hidden=8)), max_body=4096)
    with caplog.at_level(logging.WARNING, logger="charrnn.serve"):
        statuses = asyncio.run(fuzz(app, 2500))
    reg.close()
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert statuses.get(200, 0) > 300 and statuses.get(400, 0) > 300 and 413 in statuses


async def fuzz(app, count):
    """Send count random requests to app (through httpx's ASGI transport), then a good one."""
    rng = random.Random(23)
    statuses = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        for _ in range(count):
            r = rng.random()
            if r < 0.55:
                raw = json.dumps(sane(rng)).encode()
            elif r < 0.75:
                raw = json.dumps({f: value(rng) for f in rng.sample(FIELDS, 4)}).encode()
            elif r < 0.9:
                raw = json.dumps(sane(rng)).encode()
                raw = raw[: rng.randrange(len(raw))]  # truncated
            else:
                raw = bytes(rng.randrange(256) for _ in range(rng.randrange(50)))
            if rng.random() < 0.01:
                raw = b'{"prompt": "' + b"a" * 5000 + b'"}'  # beyond max_body
            path = (
                "/v1/completions"
                if rng.random() < 0.97
                else rng.choice(["/v1/models", "/v1/x", "/", "/health"])
            )
            method = "POST" if path == "/v1/completions" or rng.random() < 0.5 else "GET"
            resp = await c.request(method, path, content=raw, headers={"content-type": "application/json"})
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            assert resp.status_code < 500, (raw, resp.text)
            if resp.status_code >= 400:
                err = resp.json()["error"]
                assert isinstance(err["message"], str) and err["type"]
            elif path == "/v1/completions" and b'"stream": true' not in raw:
                assert resp.json()["object"] == "text_completion"
        ok = await c.post("/v1/completions", json={"model": "tiny", "prompt": "abc", "max_tokens": 5})
        assert ok.status_code == 200 and len(ok.json()["choices"][0]["text"]) == 5
    return statuses
