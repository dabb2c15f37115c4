"""curl, the client every shell has, against a real uvicorn on a loopback port: a completion
and a chat completion, whole and streamed, give the text `charrnn sample` gives."""

import json
import shutil
import subprocess

import pytest

pytest.importorskip("uvicorn")
if shutil.which("curl") is None:
    pytest.skip("curl is not installed", allow_module_level=True)

from serve_util import app_of, live, tiny_model  # noqa: E402

PROMPT = "abc def\nghi"


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)


@pytest.fixture(scope="module")
def url(model):
    from charrnn.serve import template

    app, reg = app_of(("tiny", model), chat_templates={"tiny": template.PRESETS["plain"]})
    with live(app) as u:
        yield u
    reg.close()


def curl(url, path, body, stream=False):
    """curl's output of a POST of body (JSON) to url + path (-N: unbuffered, as for events)."""
    args = ["curl", "-sS", "--fail-with-body", "-H", "Content-Type: application/json"]
    args += ["-N"] if stream else []
    out = subprocess.run(
        args + ["-d", json.dumps(body), url + path], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def events(text):
    """The JSON events of a server-sent event stream, which must end with [DONE]."""
    data = [ln[6:] for ln in text.splitlines() if ln.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def test_completion(url, model):
    want = model.complete(PROMPT, length=300, temp=0.9, seed=4)[0].text
    got = json.loads(
        curl(url, "/v1/completions", {"prompt": PROMPT, "max_tokens": 300, "temperature": 0.9, "seed": 4})
    )
    assert got["choices"][0]["text"] == want and got["usage"]["completion_tokens"] == 300
    streamed = events(
        curl(
            url,
            "/v1/completions",
            {"prompt": PROMPT, "max_tokens": 300, "temperature": 0.9, "seed": 4, "stream": True},
            stream=True,
        )
    )
    assert "".join(e["choices"][0]["text"] for e in streamed) == want
    assert streamed[-1]["choices"][0]["finish_reason"] == "length"


def test_chat(url, model):
    msgs = [{"role": "user", "content": "abc def"}]
    want = model.complete("abc def", length=200, temp=0.8, seed=2)[0].text
    body = {"messages": msgs, "max_tokens": 200, "temperature": 0.8, "seed": 2}
    got = json.loads(curl(url, "/v1/chat/completions", body))
    assert got["choices"][0]["message"] == {"role": "assistant", "content": want}
    streamed = events(curl(url, "/v1/chat/completions", dict(body, stream=True), stream=True))
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in streamed)
    assert text == want and streamed[-1]["choices"][0]["finish_reason"] == "length"


def test_errors_are_openais_shape(url):
    args = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-H", "Content-Type: application/json"]
    out = subprocess.run(
        args + ["-d", '{"prompt": "ab", "max_tokens": -1}', url + "/v1/completions"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    body, code = out.rsplit("\n", 1)
    assert code == "400" and json.loads(body)["error"]["type"] == "invalid_request_error"
