"""The server through OpenAI's own Python client, against a real uvicorn on a loopback port:
completions with and without stream=True, the errors the client raises, a dropped stream."""

import threading
import time

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
openai = pytest.importorskip("openai")

from serve_util import app_of, live, tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)


PROMPT = "abc def\nghi"


@pytest.fixture(scope="module")
def server(model):
    app, reg = app_of(("tiny", model), api_key="k-123")
    with live(app) as url:
        yield url, reg
    reg.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="k-123", max_retries=0)


def test_models(client):
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_completion(client, model):
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0)
    assert r.choices[0].text == model.complete(PROMPT, length=40, temp=0)[0].text
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 40
    r = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=40, temperature=0.8, seed=9, n=2, top_p=0.9
    )
    want = model.complete(PROMPT, length=40, temp=0.8, seed=9, num_samples=2, top_p=0.9)
    assert [c.text for c in r.choices] == [w.text for w in want]


def test_stream(client, model, server, monkeypatch):
    # several events: each delivery of the batcher (at most 256 characters a row) waits 5 ms
    # first, so that the stream cannot be merged into one event however slowly this client
    # reads (events waiting for a slow reader are merged: a tiny model writes 2000
    # characters in a few milliseconds)
    batcher = server[1].get("tiny").batcher
    emit = batcher._emit

    def slow(*args):
        time.sleep(0.005)
        return emit(*args)

    monkeypatch.setattr(batcher, "_emit", slow)
    want = model.complete(PROMPT, length=2000, temp=0.7, seed=1)[0].text
    pieces, reasons = [], []
    for chunk in client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=2000, temperature=0.7, seed=1, stream=True
    ):
        pieces.append(chunk.choices[0].text)
        reasons.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == want and reasons[-1] == "length" and len(pieces) > 1


def test_client_errors(client, server):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="ab", max_tokens=2)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="ab", max_tokens=2, temperature=-1)
    assert "temperature" in str(e.value)
    bad = openai.OpenAI(base_url=server[0] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="tiny", prompt="ab", max_tokens=2)


def test_a_dropped_stream_leaves_the_batch(client, server, monkeypatch):
    batcher = server[1].get("tiny").batcher
    emit = batcher._emit

    def slow(*args):  # each delivery (at most 256 characters a row) 50 ms late, so that the
        time.sleep(0.05)  # 4000 characters take far longer than the checks below
        return emit(*args)

    monkeypatch.setattr(batcher, "_emit", slow)
    stream = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=4000, temperature=1.0, stream=True
    )
    next(iter(stream))
    assert batcher.load()["active"] == 1
    stream.close()
    deadline = time.monotonic() + 10
    while batcher.load()["active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert batcher.load()["active"] == 0  # long before its 4000 characters


def test_concurrent_requests_get_their_own_text(client, model, server):
    """Eight clients at once: each gets its own text (that rows submitted together share the
    steps is test_batcher's: over HTTP, a tiny model may finish a request before the next
    one arrives)."""
    out = {}

    def one(i):
        r = client.completions.create(model="tiny", prompt=PROMPT[: i + 1], max_tokens=200, temperature=0)
        out[i] = r.choices[0].text

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert out[i] == model.complete(PROMPT[: i + 1], length=200, temp=0)[0].text


def test_a_client_gone_before_its_answer_leaves_the_batch():
    """A non-streaming request whose client gives up: its rows leave long before the end."""
    httpx = pytest.importorskip("httpx")
    from charrnn.serve.schemas import Limits

    m = tiny_model(3, hidden=256)
    # far more work than 0.5 s holds on any machine (2 x 256 x 16 rows x 100k characters), so
    # the client gives up first whatever the machine's speed; only then must its rows leave
    app, reg = app_of(("big", m), limits=Limits(max_tokens=100_000))
    batcher = reg.get("big").batcher
    with live(app) as url:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(
                url + "/v1/completions", timeout=0.5, json={"prompt": "ab", "max_tokens": 100_000, "n": 16}
            )
        deadline = time.monotonic() + 30
        while batcher.load()["active"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert batcher.load()["active"] == 0 and batcher.load()["steps"] < 100_000
    reg.close()
