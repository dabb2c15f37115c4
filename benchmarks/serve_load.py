"""Load on `charrnn serve`: concurrent streaming clients, and the prefix cache on a long prompt.

    pip install -e '.[serve,bench]'   # the server, and httpx for the clients
    nice -n 10 python -m benchmarks.serve_load [--hidden 128 512] [--clients 1 8 32 128]

For each model size (2-layer LSTMs with random weights and a 65-character vocabulary, the
size of Tiny Shakespeare's: the speed of a step does not depend on what the weights learnt) it
starts `charrnn serve` in a process of its own, then for each number of clients C runs C
concurrent clients, each sending streaming completions one after another, and reports the
total characters a second, the server's CPU time per character (which the other work on a
shared machine changes less than the wall-clock figures), and the median and 99th percentile
of the time to the first character and of the time per character after it. The sequential
figure is C = 1: the same requests sent one after another. Last, a 10,000-character prompt:
the time to its first character read cold, then for the same prompt with one more character
(read from the prefix cache).

The clients run in this process (httpx, asyncio), on the same cores as the server: at many
clients their parsing of the events is part of what is measured. Prints the machine and load.
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


def machine():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown"
    return f"{name}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"


def make_run(root, hidden):
    from charrnn import checkpoint
    from charrnn.charmodel import CharModel
    from charrnn.config import ModelConfig

    m = CharModel(ModelConfig("lstm", 2, hidden, len(VOCAB)), VOCAB)
    m.init_weights(np.random.default_rng(0))
    run = Path(root) / f"lstm-2x{hidden}"
    run.mkdir()
    checkpoint.save(run / "best.npz", {"model": m.config.to_dict(), "vocab": m.vocab.to_json()}, m.params)
    return run


def start_server(run, port, max_batch, log):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CHARRNN_API_KEY")
    }
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charrnn",
            "serve",
            "-c",
            str(run),
            "--port",
            str(port),
            "--max-batch",
            str(max_batch),
            "--max-queue",
            "1024",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
    )
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return p
        except httpx.TransportError:
            time.sleep(0.2)
    p.kill()
    raise SystemExit("the server did not start")


async def one(client, url, prompt, max_tokens):
    """(time to first character, seconds per character after it, characters) of one stream."""
    body = {"model": None, "prompt": prompt, "max_tokens": max_tokens, "temperature": 1.0, "stream": True}
    body.pop("model")
    t0 = time.perf_counter()
    first = last = None
    chars = 0
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(await r.aread())
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            for ch in json.loads(line[6:])["choices"]:
                n = len(ch["text"])
                if n:
                    last = time.perf_counter()
                    first = first or last
                    chars += n
    per = (last - first) / (chars - 1) if chars > 1 else float("nan")
    return first - t0, per, chars


async def load(url, clients, per_client, max_tokens, rng):
    import httpx

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await one(client, url, "warm", 4)

        async def worker(seed):
            out = []
            r = np.random.default_rng(seed)
            for _ in range(per_client):
                prompt = "".join(r.choice(list(VOCAB[2:]), 20))
                out.append(await one(client, url, prompt, max_tokens))
            return out

        t0 = time.perf_counter()
        res = await asyncio.gather(*[worker(int(rng.integers(1 << 30))) for _ in range(clients)])
        wall = time.perf_counter() - t0
    flat = [x for r in res for x in r]
    return wall, flat


async def long_prompt(url, length, rng):
    import httpx

    prompt = "".join(rng.choice(list(VOCAB[2:]), length))
    async with httpx.AsyncClient(timeout=600) as client:
        cold = (await one(client, url, prompt, 2))[0]
        warm = (await one(client, url, prompt + "a", 2))[0]
    return cold, warm


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (Linux /proc; nan elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def pct(xs, q):
    xs = [x for x in xs if x == x]
    return float(np.percentile(xs, q)) if xs else float("nan")


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
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--max-tokens", type=int, default=200, help="characters per request")
    ap.add_argument(
        "--requests",
        type=int,
        default=8,
        help="requests per run at least (each client sends max(1, this / C))",
    )
    ap.add_argument("--long", type=int, default=10_000, help="the long prompt's length")
    ap.add_argument("--port", type=int, default=8790)
    a = ap.parse_args()
    need_extras()
    print(
        f"# serve_load: {machine()}; python {platform.python_version()}; "
        f"{a.max_tokens} chars a request, temperature 1, random-weight 2-layer LSTMs",
        flush=True,
    )
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as root, open(Path(root) / "server.log", "wb") as log:
        for H in a.hidden:
            run = make_run(root, H)
            p = start_server(run, a.port, max(a.clients), log)
            url = f"http://127.0.0.1:{a.port}"
            try:
                print(
                    f"\n## 2x{H}\n\n| clients | chars/s | vs sequential | first char p50 / p99 "
                    "(ms) | per char p50 / p99 (ms) | requests/s | server CPU | server CPU per "
                    "char (us) |\n|---|---|---|---|---|---|---|---|",
                    flush=True,
                )
                base = None
                for C in a.clients:
                    per_client = max(1, a.requests // C)
                    cpu0, here0 = cpu_seconds(p.pid), time.process_time()
                    wall, res = asyncio.run(load(url, C, per_client, a.max_tokens, rng))
                    cpu, here = cpu_seconds(p.pid) - cpu0, time.process_time() - here0
                    chars = sum(r[2] for r in res)
                    rate = chars / wall
                    base = base or rate
                    print(
                        f"| {C} | {rate:,.0f} | {rate / base:.1f}x | "
                        f"{1e3 * pct([r[0] for r in res], 50):.1f} / "
                        f"{1e3 * pct([r[0] for r in res], 99):.1f} | "
                        f"{1e3 * pct([r[1] for r in res], 50):.2f} / "
                        f"{1e3 * pct([r[1] for r in res], 99):.2f} | "
                        f"{len(res) / wall:.1f} | {cpu / wall:.0%} (clients {here / wall:.0%}) | "
                        f"{1e6 * cpu / chars:.0f} |",
                        flush=True,
                    )
                cold, warm = asyncio.run(long_prompt(url, a.long, rng))
                print(
                    f"\n{a.long:,}-character prompt, time to first character: cold "
                    f"{1e3 * cold:,.0f} ms, after a one-character extension "
                    f"{1e3 * warm:,.1f} ms",
                    flush=True,
                )
            finally:
                p.terminate()
                p.wait(60)
    print(f"\n# load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
