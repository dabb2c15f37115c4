"""echo with logprobs scores the prompt, as OpenAI's API does: the first character's log
probability null, every later one's and its top-k those of the model's own window forward over
the prompt (the naive reference), to 1e-5; through the prefix cache, for n > 1, prompt lists,
streams and max_tokens 0."""

import json

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from serve_util import app_of, complete, tiny_model  # noqa: E402

PROMPT = "abc def\nghi, jk."
TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return tiny_model(3)


@pytest.fixture(scope="module")
def served(model):
    app, reg = app_of(("tiny", model))
    with TestClient(app) as c:
        yield c, reg
    reg.close()


def reference(model, text):
    """log p (T, V) of each next character after each of text's, by the model's window
    forward from the zero state (float64 log-softmax of its logits)."""
    ids = model.encode(text)
    h, c = model.zero_state(1)
    P = model.forward(ids[:, None].astype(np.int32), h, c).P.astype(np.float64)
    return ids, P - P.max(1, keepdims=True) - np.log(
        np.exp(P - P.max(1, keepdims=True)).sum(1, keepdims=True)
    )


def check_prompt_scores(model, lp, prompt, k):
    """lp's first len(prompt) positions are the prompt, scored as the reference scores it."""
    T = len(prompt)
    ids, ref = reference(model, prompt)
    assert lp["tokens"][:T] == list(prompt)
    assert lp["text_offset"][:T] == list(range(T))
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    for t in range(1, T):
        want = ref[t - 1]
        assert abs(lp["token_logprobs"][t] - want[ids[t]]) < TOL, t
        top = lp["top_logprobs"][t]
        best = np.argsort(-want)[:k]
        assert len(top) == k
        assert sorted(top) == sorted(model.vocab.symbols[b] for b in best), t
        for ch, v in top.items():
            assert abs(v - want[model.vocab.symbols.index(ch)]) < TOL


def test_echo_scores_the_prompt(served, model):
    c, _ = served
    got = complete(c, prompt=PROMPT, max_tokens=6, temperature=0, echo=True, logprobs=3)
    (ch,) = got["choices"]
    lp = ch["logprobs"]
    check_prompt_scores(model, lp, PROMPT, 3)
    want = model.complete(PROMPT, length=6, temp=0)[0].text
    assert ch["text"] == PROMPT + want
    assert lp["tokens"] == list(PROMPT + want)
    assert lp["text_offset"] == list(range(len(PROMPT) + 6))
    # the generated positions score as the reference over prompt and text
    _, ref = reference(model, PROMPT + want)
    for t in range(len(PROMPT), len(PROMPT) + 6):
        assert abs(lp["token_logprobs"][t] - ref[t - 1][model.encode(want[t - len(PROMPT)])[0]]) < TOL
    assert got["usage"] == {
        "prompt_tokens": len(PROMPT),
        "completion_tokens": 6,
        "total_tokens": len(PROMPT) + 6,
    }


def test_lists_and_n_score_each_prompt(served, model):
    c, _ = served
    prompts = ["ab cd\nef", "k", PROMPT]
    got = complete(c, prompt=prompts, n=2, max_tokens=4, temperature=0.9, seed=5, echo=True, logprobs=2)
    assert [ch["index"] for ch in got["choices"]] == list(range(6))
    for j, ch in enumerate(got["choices"]):
        p = prompts[j // 2]
        assert ch["text"].startswith(p)
        check_prompt_scores(model, ch["logprobs"], p, 2)
        assert len(ch["logprobs"]["tokens"]) == len(p) + 4
    want = [model.complete(p, length=4, temp=0.9, seed=5, num_samples=2) for p in prompts]
    assert [ch["text"] for ch in got["choices"]] == [p + w.text for p, ws in zip(prompts, want) for w in ws]
    assert got["usage"]["prompt_tokens"] == sum(map(len, prompts))
    assert got["usage"]["completion_tokens"] == 6 * 4


def test_a_prompt_extending_a_cached_one_is_scored_whole(model):
    long = (PROMPT + " ") * 40  # 680 characters: past two of the cache's stops
    app, reg = app_of(("tiny", model))
    opts = dict(max_tokens=8, temperature=0.8, seed=4)
    with TestClient(app) as c:
        cold = complete(c, prompt=long + "p", **opts)
        complete(c, prompt=long, max_tokens=1)  # cached: `long` and its prefixes
        cache = reg.get("tiny").batcher.cache
        assert cache.hits >= 1 and len(cache) >= 3
        got = complete(c, prompt=long + "p", echo=True, logprobs=1, **opts)
        again = complete(c, prompt=long + "p", echo=True, logprobs=1, **opts)
    reg.close()
    (ch,) = got["choices"]
    check_prompt_scores(model, ch["logprobs"], long + "p", 1)
    assert ch["text"] == long + "p" + cold["choices"][0]["text"]
    assert again["choices"] == got["choices"]


def test_a_stream_scores_the_prompt_as_the_whole_answer_does(served, model):
    c, _ = served
    body = {
        "model": "tiny",
        "prompt": ["ab cd\nef", PROMPT],
        "n": 2,
        "max_tokens": 30,
        "temperature": 1.0,
        "seed": 9,
        "echo": True,
        "logprobs": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with c.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    merged = {}
    for ch in chunks:
        for x in ch["choices"]:
            m = merged.setdefault(x["index"], {"text": "", "lp": {}})
            m["text"] += x["text"]
            for key, v in x["logprobs"].items():
                m["lp"].setdefault(key, []).extend(v)
    body.pop("stream"), body.pop("stream_options")
    whole = complete(c, **body)
    assert sorted(merged) == [0, 1, 2, 3]
    for j, ch in enumerate(whole["choices"]):
        assert merged[j]["text"] == ch["text"]
        assert merged[j]["lp"] == ch["logprobs"]
    assert chunks[-1]["usage"] == whole["usage"]


def test_max_tokens_0_with_echo_scores_only_the_prompt(served, model):
    c, _ = served
    got = complete(c, prompt=[PROMPT, ""], max_tokens=0, echo=True, logprobs=4)
    a, b = got["choices"]
    assert a["text"] == PROMPT and a["finish_reason"] == "length"
    check_prompt_scores(model, a["logprobs"], PROMPT, 4)
    assert len(a["logprobs"]["tokens"]) == len(PROMPT)
    assert b["text"] == "" and b["logprobs"]["tokens"] == []
    assert got["usage"] == {"prompt_tokens": len(PROMPT), "completion_tokens": 0, "total_tokens": len(PROMPT)}
    r = c.post("/v1/completions", json={"model": "tiny", "prompt": "ab", "max_tokens": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_a_byte_level_model_echoes_text_and_scores_bytes():
    from charrnn.charmodel import CharModel
    from charrnn.config import ModelConfig

    vocab = b"abc def\n\xc3\xa9"
    m = CharModel(ModelConfig("gru", 1, 12, len(vocab)), vocab)
    m.init_weights(np.random.default_rng(5))
    app, reg = app_of(("bytes", m))
    with TestClient(app) as c:
        got = complete(c, model="bytes", prompt="ab é", max_tokens=5, temperature=0, echo=True, logprobs=2)
    reg.close()
    (ch,) = got["choices"]
    lp = ch["logprobs"]
    assert ch["text"].startswith("ab é")
    prompt = "ab é".encode()
    assert "".join(lp["tokens"][: len(prompt)]) == "ab é"
    ids, ref = reference(m, prompt)
    for t in range(1, len(prompt)):
        assert abs(lp["token_logprobs"][t] - ref[t - 1][ids[t]]) < TOL
    assert got["usage"]["prompt_tokens"] == len(prompt)
