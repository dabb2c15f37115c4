"""Chat completions: the messages written by a chat template (plain, play, a JSON one) and
completed as a completion of that text is; OpenAI's chat shapes, whole and streamed; the
official client's chat.completions.create and `llm` with the model declared as a chat model,
against a real uvicorn on a loopback port; GET /v1/models/{id}."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from serve_util import app_of, live, post_ok, tiny_model  # noqa: E402

VOCAB = "abcdefghij klmnop\n.,ABCDEFGHIJKLMNOPQRSTUVWXYZ:"
A = [{"role": "user", "content": "a"}]


@pytest.fixture(scope="module")
def model():
    return tiny_model(0, vocab=VOCAB)


@pytest.fixture(scope="module")
def templates():
    from charrnn.serve import template

    return {"tiny": template.PRESETS["plain"], "play": template.PRESETS["play"]}


@pytest.fixture(scope="module")
def client(model, templates):
    app, reg = app_of(("tiny", model), ("play", model), chat_templates=templates)
    with TestClient(app) as c:
        yield c
    reg.close()


def chat(client, **body):
    return post_ok(client, "/v1/chat/completions", **body)


def test_plain_is_the_messages_continued(client, model):
    parts = [{"type": "text", "text": "de"}, {"type": "text", "text": "f"}]
    msgs = [{"role": "system", "content": "abc "}, {"role": "user", "content": parts}]
    got = chat(client, messages=msgs, max_completion_tokens=50, temperature=0.8, seed=3, n=2)
    want = model.complete("abc def", length=50, temp=0.8, seed=3, num_samples=2)
    assert got["object"] == "chat.completion" and got["id"].startswith("chatcmpl-")
    assert [c["message"] for c in got["choices"]] == [{"role": "assistant", "content": w.text} for w in want]
    assert [c["index"] for c in got["choices"]] == [0, 1]
    assert got["usage"] == {"prompt_tokens": 7, "completion_tokens": 100, "total_tokens": 107}


def test_play_names_the_speakers_and_stops_at_a_blank_line(client, model):
    msgs = [
        {"role": "user", "name": "ROMEO", "content": "ab cd"},
        {"role": "assistant", "content": "ef."},
        {"role": "user", "content": "gh"},
    ]
    text = "ROMEO:\nab cd\n\nASSISTANT:\nef.\n\nUSER:\ngh\n\nASSISTANT:\n"
    got = chat(client, model="play", messages=msgs, max_tokens=300, temperature=0)
    full = model.complete(text, length=300, temp=0)[0].text
    reply = got["choices"][0]
    if "\n\n" in full:
        assert reply["finish_reason"] == "stop" and reply["message"]["content"] == full[: full.find("\n\n")]
    else:
        assert reply["finish_reason"] == "length" and reply["message"]["content"] == full
    # a last assistant message is continued: it names who speaks next
    msgs[-1:] = [{"role": "assistant", "name": "JULIET", "content": "a"}]
    got = chat(client, model="play", messages=msgs, max_tokens=20, temperature=0, stop="Z")
    full = model.complete("ROMEO:\nab cd\n\nASSISTANT:\nef.\n\nJULIET:\na", length=20, temp=0)[0].text
    cuts = [full.find(s) for s in ("\n\n", "Z") if s in full]
    assert got["choices"][0]["message"]["content"] == full[: min(cuts, default=len(full))]


def test_logprobs_in_the_chat_shape(client):
    got = chat(client, messages=A, max_tokens=4, logprobs=True, top_logprobs=2)
    lp = got["choices"][0]["logprobs"]["content"]
    assert "".join(e["token"] for e in lp) == got["choices"][0]["message"]["content"]
    assert all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in lp)
    assert lp[0]["bytes"] == list(lp[0]["token"].encode())
    assert chat(client, messages=A, max_tokens=2)["choices"][0]["logprobs"] is None


def test_a_stream_sends_deltas(client, model):
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "abc"}],
        "max_tokens": 300,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    assert "".join(d["content"] for d in deltas) == model.complete("abc", length=300, temp=0)[0].text
    assert chunks[-1]["usage"]["completion_tokens"] == 300


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "a"}]}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
        ({"messages": [{"role": "user", "content": "a€"}]}, "messages"),
        ({"messages": A, "max_completion_tokens": 0}, "max_completion_tokens"),
        ({"messages": A, "logprobs": 3}, "logprobs"),
        ({"messages": A, "logprobs": True, "top_logprobs": 99}, "top_logprobs"),
        ({"messages": A, "top_logprobs": 2}, "top_logprobs"),
    ],
)
def test_bad_chat_requests_get_openai_errors(client, body, param):
    r = client.post("/v1/chat/completions", json=dict({"model": "tiny"}, **body))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["message"]


def test_models_say_what_they_expect(client):
    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert listed["play"]["chat_template"]["source"] == "play"
    one = client.get("/v1/models/play")
    assert one.status_code == 200 and one.json() == listed["play"]
    r = client.get("/v1/models/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_templates_load_and_check(tmp_path, model):
    from charrnn.errors import UsageError
    from charrnn.serve import template
    from charrnn.serve.chat import check_template

    f = tmp_path / "t.json"
    f.write_text(json.dumps({"message": "{name}. {content}\n", "reply": "{name}.", "names": {"user": "A"}}))
    t = template.for_models([str(f)], ["tiny"])["tiny"]
    assert t.render([("user", None, "hi"), ("user", "B", "ho")]) == "A. hi\nB. ho\nASSISTANT."
    both = template.for_models(["plain", "x=play"], ["x", "y"])
    assert both["x"].source == "play" and both["y"].source == "plain"
    for bad in ("nosuch", '{"message": "{who}"}', '{"stop": 3}', "z=play"):
        with pytest.raises(UsageError):
            template.for_models([bad], ["x"])
    with pytest.raises(UsageError, match="does not suit"):
        check_template(template.PRESETS["play"], tiny_model(0), "lower")


# -- real clients, on a real server ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(model, templates):
    pytest.importorskip("uvicorn")
    app, reg = app_of(("tiny", model), ("play", model), chat_templates=templates)
    with live(app) as url:
        yield url
    reg.close()


def test_the_openai_client(server, model):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    msgs = [{"role": "user", "content": "abc"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=40, temperature=0.7, seed=5)
    want = model.complete("abc", length=40, temp=0.7, seed=5)[0].text
    assert r.choices[0].message.content == want and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 40
    pieces = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="tiny", messages=msgs, max_completion_tokens=40, temperature=0.7, seed=5, stream=True
        )
        if c.choices
    ]
    assert "".join(pieces) == want
    assert client.models.retrieve("play").id == "play"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Q€"}])


@pytest.mark.parametrize("stream", [True, False])
def test_llm_with_the_model_as_a_chat_model(server, model, tmp_path, stream):
    pytest.importorskip("llm")
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: tiny\n  model_name: tiny\n  api_base: {server}/v1\n"
    )
    env = dict(os.environ, LLM_USER_PATH=str(tmp_path))
    env.pop("OPENAI_API_KEY", None)
    llm = Path(sys.executable).with_name("llm")
    cmd = [str(llm), "-m", "tiny", "--no-log", "-o", "temperature", "0", "-o", "max_tokens", "60", "abc"]
    out = subprocess.run(cmd + ([] if stream else ["--no-stream"]), capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == model.complete("abc", length=60, temp=0)[0].text + "\n"
