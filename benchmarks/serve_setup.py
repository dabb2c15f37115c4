"""The server's cost per completion on its event loop: streaming completions of one character,
one after another, sent straight into the ASGI app (no sockets, no HTTP parsing), with the
batcher thread running as in `charrnn serve`.

    nice -n 10 python -m benchmarks.serve_setup [--hidden 128] [--requests 1000]

Prints the wall time per completion (the loop's work, the batcher's, and the hand-offs between
the two threads) and the event loop thread's own CPU time per completion.
"""

import argparse
import asyncio
import json
import platform
import sys
import time

import numpy as np

from .serve_load import VOCAB, machine


def scope_of(body):
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},  # as uvicorn
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/completions",
        "raw_path": b"/v1/completions",
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }


async def one(app, body):
    done, sent = asyncio.Event(), [False]

    async def receive():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(msg):
        if msg["type"] == "http.response.body" and not msg.get("more_body", False):
            done.set()

    await app(scope_of(body), receive, send)


async def run(app, body, n):
    for _ in range(20):  # warm
        await one(app, body)
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(n):
        await one(app, body)
    return (time.perf_counter() - wall) / n, (time.thread_time() - cpu) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--requests", type=int, default=1000)
    a = ap.parse_args()
    from charrnn.charmodel import CharModel
    from charrnn.config import ModelConfig
    from charrnn.serve.app import Settings, build_app
    from charrnn.serve.models import Registry
    from charrnn.serve.server import SWITCH_INTERVAL
    from charrnn.serve.stepper import warm

    sys.setswitchinterval(SWITCH_INTERVAL)  # as make_app sets it
    m = CharModel(ModelConfig("lstm", 2, a.hidden, len(VOCAB)), VOCAB)
    m.init_weights(np.random.default_rng(0))
    warm("lstm", m.dtype)
    reg = Registry([("m", m)], reload=False, max_batch=64, max_queue=256)
    body = json.dumps(
        {
            "model": "m",
            "prompt": "ROMEO: what is this, my lord?",
            "max_tokens": 1,
            "temperature": 1.0,
            "stream": True,
        }
    ).encode()
    print(
        f"# serve_setup: {machine()}; python {platform.python_version()}; 2x{a.hidden} LSTM, "
        f"{a.requests} streaming completions of 1 character, one after another",
        flush=True,
    )
    try:
        wall, cpu = asyncio.run(run(build_app(reg, Settings()), body, a.requests))
    finally:
        reg.close()
    print(f"per completion: {1e3 * wall:.2f} ms wall, event loop CPU {1e3 * cpu:.3f} ms")


if __name__ == "__main__":
    main()
