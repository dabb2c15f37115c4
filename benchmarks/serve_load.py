"""`charrnn serve` against the engine under it: one client, 32 clients, and a long prompt
read beside a running stream (issue 40's targets).

    pip install -e '.[serve,bench]'   # the server, and httpx for the clients
    python -m benchmarks.serve_load [--hidden 128 512] [--baseline CHECKOUT]

For each model size (a 2-layer LSTM with random weights and a 65-character vocabulary, the
size of Tiny Shakespeare's: the speed of a step does not depend on what the weights learnt):

1. the engine alone, in this process before the server starts: `charrnn sample`'s sampler
   (its default path, as the command runs it) at batch 1, and summed over 32 rows;
2. one client sending non-streaming requests of 400 characters one after another, and 32
   such clients at once: characters a second, and the share of the engine's rate; the 32
   clients twice, through httpx (as most Python programs talk to a server) and through a
   lean client of a few lines (Raw), since at 2x128 the clients' own CPU on the same cores
   is a large part of what is measured;
3. a stream already running, then a 200,000-character prompt (max_tokens 1), then 0.2 s
   later a new 50-character streaming request: the new request's time to its first
   character, and the running stream's rate while the long prompt is read, against its
   rate alone just before.

The server runs in a process of its own (`--baseline DIR`: the same, from another checkout,
for a before-and-after table on one machine); the clients run in this one (httpx, asyncio).
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are dropped from the server's environment. Prints
the machine and load.
"""

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VOCAB = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # 65, as Shakespeare
TEMP = 0.8


def machine():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown"
    return f"{name}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"


def make_model(hidden):
    from charrnn.charmodel import CharModel
    from charrnn.config import ModelConfig

    m = CharModel(ModelConfig("lstm", 2, hidden, len(VOCAB)), VOCAB)
    m.init_weights(np.random.default_rng(0))
    return m


def make_run(root, m):
    from charrnn import checkpoint

    run = Path(root) / f"lstm-2x{m.config.hidden}"
    run.mkdir()
    checkpoint.save(run / "best.npz", {"model": m.config.to_dict(), "vocab": m.vocab.to_json()}, m.params)
    return run


def engine_rate(m, rows, seconds=2.0):
    """Characters a second summed over `rows` rows of the sampler `charrnn sample` runs, after
    a warm-up that loads its kernels and lets its Switch settle."""
    from charrnn.config import SampleConfig
    from charrnn.engine.sampler import Sampler, pick_of

    s = Sampler(m, rows)
    s.prime(np.array([0]))
    pick, rng = pick_of(SampleConfig(temp=TEMP)), np.random.default_rng(0)
    t = time.perf_counter()
    while time.perf_counter() - t < 0.6:
        s.generate(256, rng, pick)
        if s._loader is not None and s._loader.is_alive():
            s._loader.join()
            t = time.perf_counter()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        s.generate(256, rng, pick)
        n += 256
    return n * rows / (time.perf_counter() - t)


def start_server(run, port, log, checkout=None):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CHARRNN_API_KEY")
    }
    if checkout:
        env["PYTHONPATH"] = str(Path(checkout).resolve())
    args = ["serve", "-c", str(run), "--port", str(port), "--max-batch", "64", "--quiet"]
    args += ["--max-queue", "1024", "--max-tokens", "1000000"]
    p = subprocess.Popen(
        [sys.executable, "-m", "charrnn", *args],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
        cwd=checkout or None,
    )
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return p
        except httpx.TransportError:
            time.sleep(0.2)
    p.kill()
    raise SystemExit("the server did not start (see its log)")


def prompt_of(rng, n):
    return "".join(rng.choice(list(VOCAB[2:]), n))


async def whole(client, url, prompt, max_tokens):
    """Characters written in one non-streaming request."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": TEMP}
    r = await client.post(url + "/v1/completions", json=body)
    if r.status_code != 200:
        raise RuntimeError(r.text)
    return sum(len(c["text"]) for c in r.json()["choices"])


class Raw:
    """A lean HTTP/1.1 client of one keep-alive connection (asyncio streams): a POST of JSON
    and its JSON answer, about a tenth of httpx's CPU a request, so that 32 of them in this
    process measure the server more than themselves."""

    def __init__(self, url):
        self.host, self.port = url.split("//")[1].split(":")
        self.conn = None

    async def post(self, path, body):
        if self.conn is None:
            self.conn = await asyncio.open_connection(self.host, int(self.port))
        reader, writer = self.conn
        data = json.dumps(body).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        writer.write(head.encode() + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        got = json.loads(await reader.readexactly(length))
        if b" 200 " not in status:
            raise RuntimeError(got)
        return got

    async def close(self):
        if self.conn is not None:
            self.conn[1].close()


async def clients_rate(url, clients, max_tokens, seconds, rng, lean=False):
    """Characters a second of `clients` clients, each sending requests one after another for
    about `seconds` (lean: each a Raw connection, else one httpx client shared)."""
    import httpx

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await whole(client, url, "warm", 8)
        stop = time.perf_counter() + seconds

        async def worker(seed):
            r, n = np.random.default_rng(seed), 0
            raw = Raw(url) if lean else None
            while time.perf_counter() < stop:
                if raw is None:
                    n += await whole(client, url, prompt_of(r, 20), max_tokens)
                    continue
                body = {"prompt": prompt_of(r, 20), "max_tokens": max_tokens, "temperature": TEMP}
                got = await raw.post("/v1/completions", body)
                n += sum(len(c["text"]) for c in got["choices"])
            if raw is not None:
                await raw.close()
            return n

        t0 = time.perf_counter()
        got = await asyncio.gather(*[worker(int(rng.integers(1 << 30))) for _ in range(clients)])
        return sum(got) / (time.perf_counter() - t0)


async def stream(client, url, prompt, max_tokens, seen):
    """A streaming request; seen: a list of (time, characters) per event, appended as they
    come. Returns the time of its first character."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": TEMP, "stream": True}
    t0 = time.perf_counter()
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(await r.aread())
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                n = sum(len(c["text"]) for c in json.loads(line[6:])["choices"])
                if n:
                    seen.append((time.perf_counter(), n))
    return seen[0][0] - t0 if seen else float("nan")


def rate_in(seen, a, b):
    n = sum(c for t, c in seen if a <= t < b)
    return n / (b - a)


async def long_prompt(url, length, rng, alone=1.0):
    """(first character of a 50-character request sent while a `length` prompt is read, in
    seconds; the running stream's rate then / alone; the long prompt's read time)."""
    import httpx

    async with httpx.AsyncClient(timeout=1200) as client:
        running = []
        task = asyncio.ensure_future(stream(client, url, prompt_of(rng, 20), 10**6, running))
        while not running:
            await asyncio.sleep(0.01)
        await asyncio.sleep(alone)
        t_long = time.perf_counter()
        before = rate_in(running, t_long - alone, t_long)
        long = asyncio.ensure_future(whole(client, url, prompt_of(rng, length), 1))
        await asyncio.sleep(0.2)
        first = await stream(client, url, prompt_of(rng, 50), 20, [])
        await long
        t_end = time.perf_counter()
        during = rate_in(running, t_long, t_end)
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
    return first, during / before, t_end - t_long


EXTRAS = "serve,bench"  # the extras this benchmark needs (a test checks its imports are in them)


def need_extras():
    """Exit with the install command when a package of EXTRAS is missing."""
    try:
        import httpx  # noqa: F401  the clients
        import uvicorn  # noqa: F401  the server
    except ImportError as e:
        raise SystemExit(f"serve_load needs {e.name}: pip install -e '.[{EXTRAS}]'") from None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--max-tokens", type=int, default=400, help="characters per request")
    ap.add_argument("--clients", type=int, default=32, help="the concurrent clients")
    ap.add_argument("--seconds", type=float, default=4.0, help="of each load")
    ap.add_argument("--long", type=int, default=200_000, help="the long prompt's length")
    ap.add_argument("--baseline", metavar="CHECKOUT", help="also serve from this checkout")
    ap.add_argument("--port", type=int, default=8790)
    a = ap.parse_args()
    need_extras()
    print(
        f"# serve_load: {machine()}; python {platform.python_version()}; "
        f"{a.max_tokens} chars a request, temperature {TEMP}, random-weight 2-layer LSTMs; "
        "the server without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE",
        flush=True,
    )
    servers = [("this checkout", None)] + ([("baseline", a.baseline)] if a.baseline else [])
    print(
        "\n| model | server | engine batch 1 | one client | share | engine batch "
        f"{a.clients} | {a.clients} clients | share | {a.clients} lean clients | share | "
        "first char beside the long prompt | "
        "running stream kept | long prompt read |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as root, open(Path(root) / "server.log", "wb") as log:
        for H in a.hidden:
            m = make_model(H)
            run = make_run(root, m)
            e1, eN = engine_rate(m, 1), engine_rate(m, a.clients)
            for name, checkout in servers:
                p = start_server(run, a.port, log, checkout)
                url = f"http://127.0.0.1:{a.port}"
                try:
                    one = asyncio.run(clients_rate(url, 1, a.max_tokens, a.seconds, rng))
                    many = asyncio.run(clients_rate(url, a.clients, a.max_tokens, a.seconds, rng))
                    lean = asyncio.run(clients_rate(url, a.clients, a.max_tokens, a.seconds, rng, True))
                    first, kept, took = asyncio.run(long_prompt(url, a.long, rng))
                finally:
                    p.terminate()
                    p.wait(60)
                print(
                    f"| 2x{H} | {name} | {e1:,.0f} | {one:,.0f} | {one / e1:.0%} | {eN:,.0f} | "
                    f"{many:,.0f} | {many / eN:.0%} | {lean:,.0f} | {lean / eN:.0%} | "
                    f"{1e3 * first:,.0f} ms | {kept:.0%} | "
                    f"{took:.1f} s |",
                    flush=True,
                )
    print(f"\n# load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
