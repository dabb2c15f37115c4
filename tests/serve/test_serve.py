"""The server's API through Starlette's test client: the same text as CharModel (greedy and
seeded), OpenAI's response and error shapes, the caps, the prefix cache against a cold read."""

import json

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from serve_util import app_of, complete, tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)


PROMPT = "abc def\nghi"


@pytest.fixture(scope="module")
def client(model):
    app, reg = app_of(("tiny", model), ("other", tiny_model(1, hidden=8)))
    with TestClient(app) as c:
        yield c
    reg.close()


def test_models_lists_the_runs(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "list" and [m["id"] for m in data["data"]] == ["tiny", "other"]


def test_greedy_completion_is_charmodels(client, model):
    got = complete(client, prompt=PROMPT, max_tokens=60, temperature=0, seed=7)
    want = model.complete(PROMPT, length=60, temp=0)[0]
    (ch,) = got["choices"]
    assert ch["text"] == want.text and ch["finish_reason"] == "length"
    assert got["object"] == "text_completion" and got["model"] == "tiny"
    assert got["usage"] == {
        "prompt_tokens": len(PROMPT),
        "completion_tokens": 60,
        "total_tokens": len(PROMPT) + 60,
    }


@pytest.mark.parametrize(
    "opts",
    [
        dict(temperature=1.0, seed=3),
        dict(temperature=0.7, top_p=0.8, seed=5, n=3),
        dict(temperature=0.9, seed=11, n=2, presence_penalty=0.6, frequency_penalty=0.4),
        dict(temperature=0.5, seed=2, no_repeat=4, top_k=5),
    ],
)
def test_seeded_sampling_is_charmodels(client, model, opts):
    got = complete(client, prompt=PROMPT, max_tokens=80, **opts)
    want = model.complete(
        PROMPT,
        length=80,
        temp=opts["temperature"],
        top_p=opts.get("top_p", 1.0),
        top_k=opts.get("top_k", 0),
        seed=opts["seed"],
        num_samples=opts.get("n", 1),
        presence_penalty=opts.get("presence_penalty", 0.0),
        frequency_penalty=opts.get("frequency_penalty", 0.0),
        no_repeat=opts.get("no_repeat", 0),
    )
    assert [c["text"] for c in got["choices"]] == [w.text for w in want]
    assert [c["index"] for c in got["choices"]] == list(range(len(want)))


def test_prompt_lists_echo_and_stop(client, model):
    greedy = model.complete("ab", length=40, temp=0)[0].text
    stop = greedy[10:12]
    got = complete(client, prompt=["ab", "ab"], max_tokens=40, temperature=0, stop=stop, echo=True)
    cut = greedy.find(stop)
    assert [c["text"] for c in got["choices"]] == ["ab" + greedy[:cut]] * 2
    assert [c["finish_reason"] for c in got["choices"]] == ["stop", "stop"]


def test_logprobs_are_the_models(client, model):
    got = complete(client, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=3)
    lp = got["choices"][0]["logprobs"]
    text = got["choices"][0]["text"]
    assert "".join(lp["tokens"]) == text and lp["text_offset"] == list(range(5))
    # the reference: the model's window forward over the prompt and text, in float64
    ids = model.encode(PROMPT + text)
    h, c = model.zero_state(1)
    w = model.forward(ids[None, :].T.astype(np.int32), h, c)
    P = w.P.astype(np.float64)  # (T, V) logits after each character
    for t in range(5):
        z = P[len(PROMPT) - 1 + t]
        logp = z - z.max() - np.log(np.exp(z - z.max()).sum())
        assert lp["token_logprobs"][t] == pytest.approx(logp[ids[len(PROMPT) + t]], abs=1e-4)
        top = lp["top_logprobs"][t]
        assert len(top) == 3 and max(top.values()) == pytest.approx(logp.max(), abs=1e-4)


def test_streaming_sends_the_same_text(client, model):
    want = model.complete(PROMPT, length=50, temp=0)[0].text
    with client.stream(
        "POST",
        "/v1/completions",
        json={
            "model": "tiny",
            "prompt": PROMPT,
            "max_tokens": 50,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == want
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 50


def test_a_cached_prompt_gives_a_cold_reads_text_and_logits(model):
    long = (PROMPT + " ") * 120  # 1440 characters: several of the cache's stops on the way
    opts = dict(max_tokens=30, temperature=0.8, seed=4, logprobs=2)
    app, reg = app_of(("tiny", model))
    with TestClient(app) as c:
        cold = complete(c, prompt=long + "p", **opts)
        assert reg.get("tiny").batcher.cache.hits == 0
        c.post("/v1/completions", json={"model": "tiny", "prompt": long, "max_tokens": 1})
        served = reg.get("tiny").batcher
        hits = served.cache.hits
        warm = complete(c, prompt=long + "p", **opts)  # reads only "p" ... after `long`
        assert served.cache.hits == hits + 1
    reg.close()
    assert warm["choices"] == cold["choices"]
    want = model.complete(long + "p", length=30, temp=0.8, seed=4)[0].text
    assert warm["choices"][0]["text"] == want


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"prompt": "ab", "max_tokens": -1}, 400, "max_tokens"),
        ({"prompt": "ab", "max_tokens": 10**9}, 400, "max_tokens"),
        ({"prompt": "ab", "n": 0}, 400, "n"),
        ({"prompt": "ab", "n": 1000}, 400, "n"),
        ({"prompt": "ab", "temperature": -0.1}, 400, "temperature"),
        ({"prompt": "ab", "top_p": 0}, 400, "top_p"),
        ({"prompt": "ab", "top_p": 1.5}, 400, "top_p"),
        ({"prompt": "ab", "presence_penalty": 3}, 400, "presence_penalty"),
        ({"prompt": 5}, 400, "prompt"),
        ({"prompt": [1, 2]}, 400, "prompt"),
        ({"prompt": "ab", "stop": 3}, 400, "stop"),
        ({"prompt": "ab", "stop": "Z"}, 400, "stop"),
        ({"prompt": "ab", "seed": -1}, 400, "seed"),
        ({"prompt": "ab", "stream": "yes"}, 400, "stream"),
        ({"prompt": "ab€", "max_tokens": 3}, 400, "prompt"),
        ({"model": "nope", "prompt": "ab"}, 404, "model"),
    ],
)
def test_bad_requests_get_openai_errors(client, body, status, param):
    r = client.post("/v1/completions", json=dict({"model": "tiny"}, **body))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and err["type"]


def test_unknown_characters_are_named(client):
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "abZ€"})
    assert r.status_code == 400 and "'Z'" in r.json()["error"]["message"]
    assert "'€'" in r.json()["error"]["message"]


def test_drop_unknown_leaves_them_out(model):
    app, reg = app_of(("tiny", model), drop_unknown=True)
    with TestClient(app) as c:
        got = complete(c, prompt="abZ€c", max_tokens=20, temperature=0, echo=True)
    reg.close()
    assert got["choices"][0]["text"] == "abc" + model.complete("abc", length=20, temp=0)[0].text


def test_malformed_and_large_bodies(client):
    for raw in (b"{", b"[]", b"null", b'{"prompt": "a"', b"\xff\xfe"):
        r = client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "error" in r.json()
    r = client.post("/v1/completions", content=b" " * (10 << 20))
    assert r.status_code == 413 and r.json()["error"]["message"]
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/completions").status_code == 405
    assert client.get("/health").json()["status"] == "ok"


def test_api_key(model):
    app, reg = app_of(("tiny", model), api_key="sesame")
    with TestClient(app) as c:
        assert c.get("/v1/models").status_code == 401
        r = c.post("/v1/completions", json={"prompt": "ab"}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = c.post(
            "/v1/completions",
            json={"prompt": "ab", "max_tokens": 2},
            headers={"Authorization": "Bearer sesame"},
        )
        assert r.status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200
    reg.close()


def test_a_full_server_says_429(model):
    from charrnn.serve.batcher import Busy
    from charrnn.serve.jobs import Job

    app, reg = app_of(("tiny", model), max_batch=1, max_queue=0)
    b = reg.get("tiny").batcher
    with TestClient(app) as c:
        # writes until cancelled: a tiny model's 4,000 characters, many a kernel call, could
        # end before the request below arrived
        blocker = Job(model.encode("ab"), 1, 10**12, lambda events: None)
        b.submit(blocker)
        r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 3})
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
        blocker.cancel()
        import time

        for _ in range(500):  # the cancelled row leaves, then a probe's does: the server is free
            try:
                b.submit(Job(model.encode("ab"), 1, 1, lambda events: None))
                break
            except Busy:
                time.sleep(0.01)
        for _ in range(500):  # (on a loaded machine the probe may still be writing)
            if b.load()["active"] == 0 and b.load()["queued"] == 0:
                break
            time.sleep(0.01)
        r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 3})
        assert r.status_code == 200
    reg.close()


def test_a_byte_level_model(model):
    from charrnn.charmodel import CharModel
    from charrnn.config import ModelConfig

    vocab = b"abc def\n\xc3\xa9"
    m = CharModel(ModelConfig("gru", 1, 12, len(vocab)), vocab)
    m.init_weights(np.random.default_rng(5))
    app, reg = app_of(("bytes", m))
    with TestClient(app) as c:
        got = complete(c, model="bytes", prompt="ab é", max_tokens=30, temperature=0.9, seed=2)
    reg.close()
    want = m.complete("ab é", length=30, temp=0.9, seed=2)[0].text
    assert got["choices"][0]["text"] == want.decode("utf-8", "replace")


def test_the_request_names_map_onto_sample_config_once():
    """schemas.SAMPLING is the one table from the request's names to SampleConfig's fields; a
    request's sampling settings arrive as the SampleConfig `charrnn sample` would build."""
    from charrnn.config import SampleConfig
    from charrnn.serve.schemas import SAMPLING, parse_completion

    assert {to for to, _, _ in SAMPLING.values()} <= set(SampleConfig.__dataclass_fields__)
    body = {"prompt": "ab", "temperature": 0.5, "top_k": 4, "presence_penalty": 1, "seed": 3}
    want = SampleConfig(temp=0.5, top_k=4, presence_penalty=1.0, seed=3)
    assert parse_completion(body).sample == want


def test_the_default_length_suits_characters(client, model):
    """No max_tokens: a paragraph (256 characters), not OpenAI's 16 tokens read as characters;
    the server's --default-max-tokens and --max-tokens set it."""
    from charrnn.serve.schemas import Limits

    got = complete(client, prompt=PROMPT, temperature=0)
    assert got["usage"]["completion_tokens"] == 256 == Limits().default_max_tokens
    for limits, want in ((Limits(default_max_tokens=10), 10), (Limits(max_tokens=100), 100)):
        app, reg = app_of(("tiny", model), limits=limits)
        with TestClient(app) as c:
            r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "ab"}]})
        reg.close()
        assert r.json()["usage"]["completion_tokens"] == want
