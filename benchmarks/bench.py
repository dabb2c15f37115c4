#!/usr/bin/env python
"""charrnn against PyTorch's CPU nn.LSTM, side by side on this machine.

    python benchmarks/bench.py                                   # charrnn only
    python benchmarks/bench.py --torch-python /path/to/venv-with-torch/bin/python

For each model size it measures, in separate processes run alternately (charrnn, torch,
charrnn, ...) so both sides see the same machine state:
  training   characters/second over N optimizer steps (after warm-up), median of the repeats
  sampling   batch-1 characters/second at temperature 0.8, median of the repeats
  memory     peak resident set size of the training process
and, for charrnn, the start-up time of `charrnn sample -n 100` from a small checkpoint with the
Numba cache warm (median wall time of several runs).

On the machines this project is developed on, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are set and
force slower BLAS kernels; benchmark with both unset, for both sides:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench.py --torch-python ...
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = {"2x128": dict(layers=2, hidden=128, batch=50, seq=50),
         "2x512": dict(layers=2, hidden=512, batch=64, seq=100)}
V = 65  # Tiny Shakespeare's vocabulary size


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment():
    import numba
    import numpy
    import scipy
    from charrnn import __version__, threads
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "charrnn": __version__, "numpy": numpy.__version__, "numba": numba.__version__,
            "scipy": scipy.__version__, "charrnn_threads": threads.num_threads(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE")}


# -- charrnn measurements, each run in a child process --------------------------------------

def child_train(layers, hidden, batch, seq, steps, warmup):
    import numpy as np
    from charrnn.model import Model, ModelConfig
    from charrnn.optim import Adam
    rng = np.random.default_rng(0)
    m = Model(ModelConfig("lstm", layers, hidden, V), "".join(chr(40 + i) for i in range(V)))
    m.init_weights(rng)
    gflat, grads = m.zeros_like_params()
    opt = Adam(m.flat)
    ids = rng.integers(0, V, (steps + warmup + 1) * seq * batch + 1).astype(np.uint8)
    per = (len(ids) - 1) // batch
    xs, ys = ids[:batch * per].reshape(batch, per), ids[1:batch * per + 1].reshape(batch, per)
    h, c = m.zero_state(batch)

    def step(k):
        nonlocal h, c
        s = slice(k * seq, (k + 1) * seq)
        x = np.ascontiguousarray(xs[:, s].T, dtype=np.int32)
        y = np.ascontiguousarray(ys[:, s].T, dtype=np.int32)
        _, (h, c) = m.loss_and_grad(x, y, h, c, grads)
        opt.step(m.flat, gflat)
    for k in range(warmup):
        step(k)
    t = time.perf_counter()
    for k in range(warmup, warmup + steps):
        step(k)
    secs = time.perf_counter() - t
    return {"chars_per_sec": steps * batch * seq / secs, "peak_rss_mb": peak_rss_mb()}


def child_sample(layers, hidden, length):
    import numpy as np
    from charrnn.api import CharModel
    from charrnn.model import ModelConfig
    from charrnn.sampler import Sampler
    m = CharModel(ModelConfig("lstm", layers, hidden, V), "".join(chr(40 + i) for i in range(V)))
    m.init_weights(np.random.default_rng(0))
    s = Sampler(m, 1)
    s.prime(np.array([0]))
    rng = np.random.default_rng(0)
    s.generate(50, rng, 0.8)
    t = time.perf_counter()
    s.generate(length, rng, 0.8)
    return {"chars_per_sec": length / (time.perf_counter() - t)}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def charrnn_cmd(mode, **kw):
    return [sys.executable, str(Path(__file__).resolve()), "--child", mode, json.dumps(kw)]


def torch_cmd(python, mode, size, steps, warmup, length):
    cmd = [python, str(HERE / "torch_baseline.py"), mode, "--layers", str(size["layers"]),
           "--hidden", str(size["hidden"]), "--repeats", "1"]
    if mode == "train":
        cmd += ["--batch", str(size["batch"]), "--seq", str(size["seq"]), "--steps", str(steps),
                "--warmup", str(warmup)]
    else:
        cmd += ["--length", str(length), "--temp", "0.8"]
    return cmd


def torch_figure(result):
    """chars/s from torch_baseline.py's JSON (its median over its own repeats)."""
    for key in ("chars_per_sec_median", "median_chars_per_sec", "chars_per_sec"):
        if key in result:
            return result[key]
    raise KeyError(f"no chars/s in {sorted(result)}")


def startup_seconds(repeats):
    """Median wall time of `charrnn sample -n 100` from a tiny checkpoint, cache warm."""
    with tempfile.TemporaryDirectory() as d:
        text = Path(d) / "t.txt"
        text.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
        exe = [sys.executable, "-m", "charrnn"]
        subprocess.run(exe + ["train", str(text), "-o", f"{d}/run", "--steps", "5", "--batch",
                              "4", "--seq", "16", "--hidden", "32", "-q"], check=True)
        subprocess.run(exe + ["sample", "-c", f"{d}/run", "-n", "100"], check=True,
                       capture_output=True)  # warms the sampling kernels' cache
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run(exe + ["sample", "-c", f"{d}/run", "-n", "100", "--seed", "1"],
                           check=True, capture_output=True)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2x128,2x512", help="comma-separated: " + ",".join(SIZES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=0, help="training steps per run (default: "
                                                          "40 at 2x128, 6 at 2x512)")
    ap.add_argument("--length", type=int, default=0, help="sampled characters per run "
                                                           "(default: 5000 / 1000)")
    ap.add_argument("--torch-python", default=os.environ.get("CHARRNN_TORCH_PYTHON"),
                    help="a Python with torch installed, to measure PyTorch beside charrnn")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = {"train": child_train, "sample": child_sample}[args.child[0]]
        print(json.dumps(fn(**json.loads(args.child[1]))))
        return
    env = environment()
    log("environment:", json.dumps(env))
    results = {"environment": env, "repeats": args.repeats, "sizes": {}}
    for name in args.sizes.split(","):
        size = SIZES[name]
        small = size["hidden"] <= 256
        steps = args.steps or (40 if small else 6)
        length = args.length or (5000 if small else 1000)
        warmup = 3 if small else 1
        r = {"config": dict(size, steps=steps, sample_length=length, vocab=V)}
        ours = {"train": [], "sample": [], "rss": []}
        theirs = {"train": [], "sample": [], "rss": []}
        for rep in range(args.repeats):
            log(f"{name}: repeat {rep + 1}/{args.repeats}")
            t = run_json(charrnn_cmd("train", **size, steps=steps, warmup=warmup))
            ours["train"].append(t["chars_per_sec"])
            ours["rss"].append(t["peak_rss_mb"])
            ours["sample"].append(run_json(charrnn_cmd("sample", layers=size["layers"],
                                                       hidden=size["hidden"], length=length))
                                  ["chars_per_sec"])
            if args.torch_python:
                t = run_json(torch_cmd(args.torch_python, "train", size, steps, warmup, length))
                theirs["train"].append(torch_figure(t))
                theirs["rss"].append(t.get("peak_rss_mb"))
                s = run_json(torch_cmd(args.torch_python, "sample", size, steps, warmup, length))
                theirs["sample"].append(torch_figure(s))
        for side, d in (("charrnn", ours), ("torch", theirs)):
            if d["train"]:
                r[side] = {"train_chars_per_sec": statistics.median(d["train"]),
                           "sample_chars_per_sec": statistics.median(d["sample"]),
                           "peak_rss_mb": max(x for x in d["rss"] if x is not None),
                           "train_runs": [round(x) for x in d["train"]],
                           "sample_runs": [round(x) for x in d["sample"]]}
        if "torch" in r:
            r["ratio"] = {k: r["charrnn"][k] / r["torch"][k]
                          for k in ("train_chars_per_sec", "sample_chars_per_sec", "peak_rss_mb")}
        results["sizes"][name] = r
    results["startup_seconds"] = startup_seconds(args.repeats)
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)


def print_table(res):
    env = res["environment"]
    print(f"# charrnn {env['charrnn']} on {env['cpu']} ({env['cores']} cores), numba "
          f"{env['numba']}, numpy {env['numpy']}; OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} "
          f"OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}; medians of {res['repeats']} runs")
    print("| model | measure | charrnn | PyTorch | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, r in res["sizes"].items():
        c = r["charrnn"]
        t = r.get("torch", {})
        q = r.get("ratio", {})
        cfg = r["config"]
        label = f"{name} (B{cfg['batch']} T{cfg['seq']})"
        for key, what, fmt in (("train_chars_per_sec", "training chars/s", ",.0f"),
                               ("sample_chars_per_sec", "sampling chars/s (batch 1)", ",.0f"),
                               ("peak_rss_mb", "peak RSS training (MB)", ",.0f")):
            tv = format(t[key], fmt) if key in t else "-"
            qv = f"{q[key]:.2f}x" if key in q else "-"
            print(f"| {label} | {what} | {format(c[key], fmt)} | {tv} | {qv} |")
    print(f"\nstart-up, `charrnn sample -n 100`, warm cache: {res['startup_seconds']:.2f} s")


if __name__ == "__main__":
    main()
