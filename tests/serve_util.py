"""Helpers of the server's tests: tiny random models, a run directory holding one, and a real
uvicorn server on a free loopback port in a thread."""

import contextlib
import socket
import threading
import time

import numpy as np
import pytest

VOCAB = "abcdefghij klmnop\n.,ABC"


def tiny_model(seed=0, hidden=16, layers=2, cell="lstm", vocab=VOCAB):
    from charrnn.charmodel import CharModel
    from charrnn.config import ModelConfig

    m = CharModel(ModelConfig(cell, layers, hidden, len(vocab)), vocab)
    m.init_weights(np.random.default_rng(seed))
    return m


def post_ok(client, path, **body):
    """A request to the model "tiny" (unless body names another) that must succeed: its JSON."""
    r = client.post(path, json=dict({"model": "tiny"}, **body))
    assert r.status_code == 200, r.text
    return r.json()


def complete(client, **body):
    return post_ok(client, "/v1/completions", **body)


def save_run(run_dir, model, name="best.npz"):
    from charrnn import checkpoint

    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {"model": model.config.to_dict(), "vocab": model.vocab.to_json()}
    return checkpoint.save(run_dir / name, meta, model.params)


def app_of(*models, reload=False, max_batch=64, max_queue=256, **settings):
    """(Starlette app, Registry) serving models, each a (name, CharModel) or a checkpoint."""
    from charrnn.serve.app import Settings, build_app
    from charrnn.serve.models import Registry

    reg = Registry(list(models), reload=reload, max_batch=max_batch, max_queue=max_queue)
    return build_app(reg, Settings(**settings)), reg


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live(app):
    """The base URL of a uvicorn server running app in a thread, until the block ends."""
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)
