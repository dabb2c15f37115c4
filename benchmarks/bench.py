#!/usr/bin/env python
"""charrnn against PyTorch's CPU nn.LSTM, side by side on this machine.

    python benchmarks/bench.py                                   # charrnn only
    python benchmarks/bench.py --torch-python /path/to/venv-with-torch/bin/python

For each model size it measures, in separate processes run alternately (charrnn, torch,
charrnn, ...) so both sides see the same machine state:
  training   characters/second over N optimizer steps (after warm-up), median of the repeats,
             and the ratio of each repeat's pair
  sampling   batch-1 characters/second at temperature 0.8, median of the repeats, for each
             weight precision asked for (--precisions: fp32, the exact default, and the
             opt-in bf16 and int8 of `charrnn sample --precision`); for fp32 also the share
             of the characters the two-core split path made (the default lets a Switch choose
             it as it samples, engine/switch.py), and 64 rows at once (`--num-samples 64`,
             characters summed over the rows)
  training in bf16  with --train-precisions fp32,bf16 (the default where the CPU has
             AVX512-BF16): `charrnn train --precision bf16`'s step beside fp32's, and
             PyTorch's under torch.autocast("cpu", dtype=torch.bfloat16), in the same
             alternation; each run's bf16 over fp32
  memory     peak resident set size of the training process
  peak       the machine's own rates, measured in the same run, and the share of them each
             figure reaches: the best fp32 SGEMM rate of the BLAS charrnn's training calls
             (SciPy's OpenBLAS, through Numba) at 1024^3 and at each size's recurrent step
             (B, H) @ (H, 4H), on one thread and on two; one thread's streaming read of a 256 MB
             array; and one thread's weight-streaming rate, a packed fp32 vector-matrix
             product (gemm.py, the sampler's loop) over a matrix as large as the weights a
             sampled character reads at each size and precision, which bounds batch-1
             sampling at bytes/s over bytes per character; and the same over two threads,
             each streaming half of it (the bound of the two-core split path)
and, for charrnn:
  start-up   `charrnn sample -n 100` from a small checkpoint, Numba's cache warm (median)
  pair       two trainings started together: their summed chars/s, and the slower one's,
             over one solo run's
  beside     batch-1 sampling at each size beside a one-thread training (the other core
             busy), over the sample alone; beside a training on both cores, the default
             path's chars/s over the serial path's in the same conditions; and a 2x256
             training beside a 2x512 sample, over the training alone

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
ROOT = Path(os.environ.get("CHARRNN_BENCH_ROOT") or HERE.parent)  # see --baseline
sys.path.insert(0, str(ROOT))  # this checkout's charrnn, whatever else is installed
SIZES = {
    "2x128": dict(layers=2, hidden=128, batch=50, seq=50),
    "2x256": dict(layers=2, hidden=256, batch=64, seq=100),
    "2x512": dict(layers=2, hidden=512, batch=64, seq=100),
}
V = 65  # Tiny Shakespeare's vocabulary size
SECTIONS = ("train", "peak", "startup", "pair", "beside")


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


def cpu_kind():
    """The CPU as lscpu describes it: model name, vendor, family/model, the widest vectors
    and the caches (None where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    f = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    f = {k.strip(): v.strip() for k, v in f.items()}
    flags = set(f.get("Flags", "").split())
    vec = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    caches = ", ".join(f"{c} {f[c]}" for c in ("L2 cache", "L3 cache") if c in f)
    return (
        f"{f.get('Model name', '?')} ({f.get('Vendor ID', '?')}, family "
        f"{f.get('CPU family', '?')} model {f.get('Model', '?')}, {vec}; {caches})"
    )


def environment():
    import llvmlite.binding as ll
    import numba
    import numpy
    import scipy
    from threadpoolctl import threadpool_info
    from charrnn import __version__
    from charrnn.engine import threads

    threads.single_threaded_blas()  # loads the BLAS that Numba calls
    blas = [
        f"{b['internal_api']} {b['version']} ({b.get('architecture')})"
        for b in threadpool_info()
        if b.get("user_api") == "blas"
    ]
    return {
        "cpu": cpu_model(),
        "lscpu": cpu_kind(),
        "cores": os.cpu_count(),
        "llvm_cpu": ll.get_host_cpu_name(),
        "python": platform.python_version(),
        "charrnn": __version__,
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "scipy": scipy.__version__,
        "blas": blas,
        "charrnn_threads": threads.num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_before": os.getloadavg()[0],
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }


def flops_per_char(layers, hidden, vocab=V, gates=4):
    """Matrix-product FLOPs of one training character: the recurrent products of every layer,
    the input products of layers above the first (the first looks up a row), the decoder;
    the backward pass does two products of the same size for each (weights and inputs)."""
    K = gates * hidden
    forward = layers * 2 * hidden * K + (layers - 1) * 2 * hidden * K + 2 * hidden * vocab
    return 3 * forward


PRECISIONS = ("fp32", "bf16", "int8")
BYTES = {"fp32": 4, "bf16": 2, "int8": 1}


def sampled_bytes(layers, hidden, precision="fp32", vocab=V, gates=4):
    """Bytes of weights one batch-1 LSTM sampling step reads: the input matrices of the layers
    above the first, every recurrent matrix and the decoder, at the precision's bytes a
    weight (int8 with a float32 scale a column), plus the first layer's row and the biases
    in float32."""
    K = gates * hidden
    n = (2 * layers - 1) * hidden * K + hidden * vocab
    scales = ((2 * layers - 1) * K + vocab) * 4 if precision == "int8" else 0
    return n * BYTES[precision] + scales + 4 * (layers * K + K + vocab)


# -- charrnn measurements, each run in a child process --------------------------------------


def child_train(layers, hidden, batch, seq, steps, warmup, precision="fp32"):
    import numpy as np
    from charrnn.engine.model import Model, ModelConfig, check_train_precision
    from charrnn.engine.optim import Adam

    rng = np.random.default_rng(0)
    m = Model(ModelConfig("lstm", layers, hidden, V))
    check_train_precision(m.config, m.dtype, precision)
    m.init_weights(rng)
    gflat, grads = m.zeros_like_params()
    opt = Adam(m.flat)
    windows = min(steps + warmup, 200)  # the text repeats after this many windows
    ids = rng.integers(0, V, (windows + 1) * seq * batch + 1).astype(np.uint8)
    per = (len(ids) - 1) // batch
    xs, ys = ids[: batch * per].reshape(batch, per), ids[1 : batch * per + 1].reshape(batch, per)
    h, c = m.zero_state(batch)

    def step(k):
        nonlocal h, c
        s = slice((k % windows) * seq, (k % windows + 1) * seq)
        x = np.ascontiguousarray(xs[:, s].T, dtype=np.int32)
        y = np.ascontiguousarray(ys[:, s].T, dtype=np.int32)
        _, (h, c) = m.loss_and_grad(x, y, h, c, grads, precision=precision)
        opt.step(m.flat, gflat)

    for k in range(warmup):
        step(k)
    t, cpu = time.perf_counter(), time.process_time()
    for k in range(warmup, warmup + steps):
        step(k)
    secs, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {
        "chars_per_sec": steps * batch * seq / secs,
        "peak_rss_mb": peak_rss_mb(),
        "chars_per_cpu_sec": steps * batch * seq / cpu,
    }


def child_sample(layers, hidden, length, parallel=None, precision="fp32", num_samples=1):
    """Characters a second (summed over the rows) of `length` steps after a warm-up; for one
    row by default the sampler's Switch (engine/switch.py) picks the serial or the split path
    as it goes, and the warm-up gives it time to try both."""
    import numpy as np
    from charrnn.api import CharModel
    from charrnn.engine.model import ModelConfig
    from charrnn.engine.sampler import Sampler

    m = CharModel(ModelConfig("lstm", layers, hidden, V), "".join(chr(40 + i) for i in range(V)))
    m.init_weights(np.random.default_rng(0))
    # fp32 without the keyword: a --baseline checkout may predate --precision
    kw = {} if precision == "fp32" else {"precision": precision}
    s = Sampler(m, num_samples, parallel=parallel, **kw)
    s.prime(np.array([0]))
    try:  # temperature 0.8 as a Pick (a --baseline checkout may predate pick_of: then temp alone)
        from charrnn.config import SampleConfig
        from charrnn.engine.sampler import pick_of

        drawn = (pick_of(SampleConfig(temp=0.8)),)
    except ImportError:
        drawn = (0.8,)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    while time.perf_counter() - t < 0.6:  # loads both paths' kernels, and lets the Switch settle
        s.generate(256, rng, *drawn)  # as `charrnn sample` calls it (CharModel.generate_ids)
        loader = getattr(s, "_loader", None)
        if loader is not None and loader.is_alive():  # compiling (a cold cache): wait for it
            loader.join()
            t = time.perf_counter()
    switch = getattr(s, "switch", None)
    split_before = switch.counts["split"] if switch is not None else 0
    t = time.perf_counter()
    s.generate(length, rng, *drawn)
    out = {"chars_per_sec": length * num_samples / (time.perf_counter() - t)}
    if switch is not None:  # the share of the timed characters the split path made
        out["split_share"] = (switch.counts["split"] - split_before) / length
    return out


def bf16_peak(best, rng):
    """The machine's bf16 rate as charrnn's training reaches it, measured like its SGEMM: a
    1024^3 product (bf16 inputs, float32 sums) on one thread, and one on each of two threads
    at once; through AMX tiles where the CPU has them, else vdpbf16ps ({} on a CPU with
    neither)."""
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    from numba import njit
    from charrnn.engine import amx, bgemm

    if not bgemm.available():
        return {}
    tiles = amx.available()

    @njit(nogil=True)
    def product(a, bp, c, cfg, n):
        for _ in range(n):
            if cfg.size > 0:
                amx.matmul(a, bp, c, False, cfg)
            else:
                bgemm.matmul(a, bp, c, False)

    m = 1024
    bp = np.zeros(m * m, np.uint16)
    bgemm.pack(rng.standard_normal((m, m)).astype(np.float32), bp)
    args = []
    for _ in range(2):
        a = np.zeros(m * m, np.uint16)
        bgemm.convert_rows(rng.standard_normal((m, m)).astype(np.float32), a)
        cfg = amx.config_buffer() if tiles else np.zeros(0, np.uint8)
        args.append((a, bp, np.zeros((m, m), np.float32), cfg))
    out = {"bf16_engine": "amx" if tiles else "avx512-bf16"}
    out["gflops_bf16_1"] = best(product, args[0], 2.0 * m**3)
    with ThreadPoolExecutor(2) as pool:

        def both(reps):
            for j in [pool.submit(product, *args[i], reps) for i in range(2)]:
                j.result()

        out["gflops_bf16_2"] = best(both, (), 2 * 2.0 * m**3)
    return out


def child_peak(repeats, shapes=(), footprints=()):
    """The machine's rates, best of `repeats`: fp32 GEMM GFLOP/s through the BLAS Numba calls,
    at 1024^3 and at each (m, k, n) of shapes, on one thread and on two; one thread's
    streaming read of a 256 MB array (GB/s); one thread's packed fp32 vector-matrix product
    (gemm.matmul, as the sampler runs it) over a matrix of each byte count in footprints
    (GB/s of weights read)."""
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    from numba import njit
    from threadpoolctl import threadpool_limits
    from charrnn.engine import gemm as G, threads

    threads.single_threaded_blas()

    @njit(nogil=True)
    def gemm(a, b, c, n):
        for _ in range(n):
            np.dot(a, b, c)

    @njit(nogil=True, fastmath=True)
    def total(x, n):  # fastmath: a vectorised reduction in several accumulators
        s = np.float32(0)
        for _ in range(n):
            for v in x:
                s += v
        return s

    @njit(nogil=True)
    def matvec(a, wp, c, n):
        for _ in range(n):
            G.matmul(a, wp, c)

    def best(fn, args, work):
        """Best rate (work units / ns) of fn(*args, n), n repetitions making ~50 ms."""
        fn(*args, 1)
        n = 1
        while True:
            t = time.perf_counter()
            fn(*args, n)
            dt = time.perf_counter() - t
            if dt > 0.05:
                break
            n *= 4
        top = n * work / dt
        for _ in range(repeats - 1):
            t = time.perf_counter()
            fn(*args, n)
            top = max(top, n * work / (time.perf_counter() - t))
        return top / 1e9

    rng = np.random.default_rng(0)
    out = {}
    for key, (m, k, n) in [("1024", (1024, 1024, 1024))] + [
        (f"{m}x{k}x{n}", (m, k, n)) for m, k, n in shapes
    ]:
        a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        c = np.empty((m, n), np.float32)
        for nt in (1, 2):
            with threadpool_limits(nt, user_api="blas"):
                out[f"gflops_{key}_{nt}"] = best(gemm, (a, b, c), 2.0 * m * k * n)
    out["gflops_1"], out["gflops_2"] = out["gflops_1024_1"], out["gflops_1024_2"]
    out.update(bf16_peak(best, rng))
    x = np.ones(64 << 20, np.float32)
    out["stream_gbs"] = best(total, (x,), x.nbytes)
    NR = G.strip_width(x)
    for size in footprints:
        k = 512
        n = max(NR, size // (4 * k) // NR * NR)
        wp = rng.standard_normal(k * n).astype(np.float32)
        a, c = np.ones((1, k), np.float32), np.zeros((1, n), np.float32)
        out[f"weights_gbs_{size}"] = best(matvec, (a, wp, c), 4.0 * k * n)
        # two threads, each streaming its own half of the columns, as the split path does
        half = max(NR, n // 2 // NR * NR)
        halves = [rng.standard_normal(k * half).astype(np.float32) for _ in range(2)]
        outs = [np.zeros((1, half), np.float32) for _ in range(2)]
        with ThreadPoolExecutor(2) as pool:

            def both(a, reps, halves=halves, outs=outs):
                jobs = [pool.submit(matvec, a, halves[i], outs[i], reps) for i in range(2)]
                for j in jobs:
                    j.result()

            out[f"weights_gbs_{size}_2"] = best(both, (a,), 2 * 4.0 * k * half)
    return out


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_json(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    log("   ", cmd[-2] if "--child" in cmd else cmd[2], json.dumps(res)[:200])
    return res


def charrnn_cmd(mode, **kw):
    return [sys.executable, str(Path(__file__).resolve()), "--child", mode, json.dumps(kw)]


def baseline_env(root):
    """The environment of a child that measures the charrnn checkout at root instead."""
    return dict(os.environ, CHARRNN_BENCH_ROOT=str(Path(root).resolve()))


def torch_cmd(python, mode, size, steps, warmup, length, autocast=None):
    cmd = [
        python,
        str(HERE / "torch_baseline.py"),
        mode,
        "--layers",
        str(size["layers"]),
        "--hidden",
        str(size["hidden"]),
        "--repeats",
        "1",
    ]
    if mode == "train":
        cmd += [
            "--batch",
            str(size["batch"]),
            "--seq",
            str(size["seq"]),
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
        ]
        if autocast:
            cmd += ["--autocast", autocast]
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
        run = dict(check=True, cwd=ROOT)
        subprocess.run(
            exe
            + [
                "train",
                str(text),
                "-o",
                f"{d}/run",
                "--steps",
                "5",
                "--batch",
                "4",
                "--seq",
                "16",
                "--hidden",
                "32",
                "-q",
            ],
            **run,
        )
        subprocess.run(
            exe + ["sample", "-c", f"{d}/run", "-n", "100"], capture_output=True, **run
        )  # warms the sampling kernels' cache
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run(
                exe + ["sample", "-c", f"{d}/run", "-n", "100", "--seed", "1"], capture_output=True, **run
            )
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def train_precisions(args):
    """The precisions of training's products to measure: --train-precisions, where auto is fp32
    and, on a CPU with AVX512-BF16, bf16."""
    if args.train_precisions != "auto":
        return args.train_precisions.split(",")
    from charrnn.engine import bgemm

    return ["fp32", "bf16"] if bgemm.available() else ["fp32"]


def measure_size(name, args):
    size = SIZES[name]
    small = size["hidden"] <= 256
    steps = args.steps or (40 if size["hidden"] <= 128 else 12 if small else 6)
    length = args.length or (5000 if small else 1000)  # PyTorch's loop: 1000 at 2x512 is 4 s
    ours = args.length or 5000  # charrnn's batch-1 runs: 1000 at 2x512 was 0.1 s, a few chunks
    warmup = 3 if small else 1
    r = {
        "config": dict(size, steps=steps, sample_length=ours, torch_sample_length=length, vocab=V),
        "flops_per_char": flops_per_char(size["layers"], size["hidden"]),
    }
    precisions = [p for p in args.precisions.split(",") if p != "fp32"]
    trained = [p for p in train_precisions(args) if p != "fp32"]
    ours_length, ours = (
        ours,
        {
            "train": [],
            "sample": [],
            "rss": [],
            "sample_b64": [],
            "split_share": [],
            **{f"sample_{p}": [] for p in precisions},
            **{f"train_{p}": [] for p in trained},
        },
    )
    theirs = {"train": [], "sample": [], "rss": [], **{f"train_{p}": [] for p in trained}}
    before = {"train": [], "sample": [], "rss": []}
    for rep in range(args.repeats):
        log(f"{name}: repeat {rep + 1}/{args.repeats}")
        if args.baseline:
            env = baseline_env(args.baseline)
            t = run_json(charrnn_cmd("train", **size, steps=steps, warmup=warmup), env)
            before["train"].append(t["chars_per_sec"])
            before["rss"].append(t["peak_rss_mb"])
            before["sample"].append(
                run_json(
                    charrnn_cmd("sample", layers=size["layers"], hidden=size["hidden"], length=ours_length),
                    env,
                )["chars_per_sec"]
            )
        t = run_json(charrnn_cmd("train", **size, steps=steps, warmup=warmup))
        ours["train"].append(t["chars_per_sec"])
        ours["rss"].append(t["peak_rss_mb"])
        for p in trained:
            t = run_json(charrnn_cmd("train", **size, steps=steps, warmup=warmup, precision=p))
            ours[f"train_{p}"].append(t["chars_per_sec"])
        one = run_json(
            charrnn_cmd("sample", layers=size["layers"], hidden=size["hidden"], length=ours_length)
        )
        ours["sample"].append(one["chars_per_sec"])
        ours["split_share"].append(one.get("split_share", 0.0))
        ours["sample_b64"].append(
            run_json(
                charrnn_cmd(
                    "sample", layers=size["layers"], hidden=size["hidden"], length=length // 4, num_samples=64
                )
            )["chars_per_sec"]
        )
        for p in precisions:
            ours[f"sample_{p}"].append(
                run_json(
                    charrnn_cmd(
                        "sample",
                        layers=size["layers"],
                        hidden=size["hidden"],
                        length=ours_length,
                        precision=p,
                    )
                )["chars_per_sec"]
            )
        if args.torch_python:
            t = run_json(torch_cmd(args.torch_python, "train", size, steps, warmup, length))
            theirs["train"].append(torch_figure(t))
            theirs["rss"].append(t.get("peak_rss_mb"))
            for p in trained:
                t = run_json(torch_cmd(args.torch_python, "train", size, steps, warmup, length, p))
                theirs[f"train_{p}"].append(torch_figure(t))
            s = run_json(torch_cmd(args.torch_python, "sample", size, steps, warmup, length))
            theirs["sample"].append(torch_figure(s))
    for side, d in (("charrnn", ours), ("torch", theirs), ("before", before)):
        if d["train"]:
            rate = statistics.median(d["train"])
            r[side] = {
                "train_chars_per_sec": rate,
                "sample_chars_per_sec": statistics.median(d["sample"]),
                "peak_rss_mb": max(x for x in d["rss"] if x is not None),
                "train_runs": [round(x) for x in d["train"]],
                "sample_runs": [round(x) for x in d["sample"]],
            }
            for extra in ("sample_b64", "split_share"):
                if d.get(extra):
                    key = "sample_b64_chars_per_sec" if extra == "sample_b64" else extra
                    r[side][key] = statistics.median(d[extra])
            for p in precisions:
                if d.get(f"sample_{p}"):
                    r[side][f"sample_{p}_chars_per_sec"] = statistics.median(d[f"sample_{p}"])
                    r[side][f"sample_{p}_runs"] = [round(x) for x in d[f"sample_{p}"]]
            r[side]["train_gflops"] = rate * r["flops_per_char"] / 1e9
            for p in trained:
                if d.get(f"train_{p}"):
                    r[side][f"train_{p}_chars_per_sec"] = statistics.median(d[f"train_{p}"])
                    r[side][f"train_{p}_runs"] = [round(x) for x in d[f"train_{p}"]]
                    pairs = [a / b for a, b in zip(d[f"train_{p}"], d["train"])]
                    r[side][f"train_{p}_over_fp32"] = statistics.median(pairs)
                    r[side][f"train_{p}_over_fp32_runs"] = [round(x, 2) for x in pairs]
    if "torch" in r:
        r["ratio"] = {
            k: r["charrnn"][k] / r["torch"][k]
            for k in ("train_chars_per_sec", "sample_chars_per_sec", "peak_rss_mb")
        }
        for p in precisions:  # against PyTorch's own (float32) batch-1 loop
            r["ratio"][f"sample_{p}_chars_per_sec"] = (
                r["charrnn"][f"sample_{p}_chars_per_sec"] / r["torch"]["sample_chars_per_sec"]
            )
        r["ratio"]["train_runs"] = [round(a / b, 2) for a, b in zip(ours["train"], theirs["train"])]
        for p in trained:  # against PyTorch's own mixed precision
            key = f"train_{p}_chars_per_sec"
            r["ratio"][key] = r["charrnn"][key] / r["torch"][key]
            r["ratio"][f"train_{p}_runs"] = [
                round(a / b, 2) for a, b in zip(ours[f"train_{p}"], theirs[f"train_{p}"])
            ]
    if "before" in r:
        r["speedup"] = {
            k: r["charrnn"][k] / r["before"][k]
            for k in ("train_chars_per_sec", "sample_chars_per_sec", "peak_rss_mb")
        }
        r["speedup"]["train_runs"] = [round(a / b, 2) for a, b in zip(ours["train"], before["train"])]
    return r


def shares(r, size, peak, precisions):
    """Each side's figures as fractions of the machine's rates (child_peak): training's
    GEMM FLOPs a second over the 1024^3 and the step-shape SGEMM rates on two threads and
    one thread's times two (charrnn trains a part of the batch per core, each on one thread);
    batch-1 sampling's weight bytes a second over one thread's weight-streaming rate at the
    same footprint."""
    step = f"{size['batch']}x{size['hidden']}x{4 * size['hidden']}"
    for side in ("charrnn", "torch", "before"):
        if side not in r:
            continue
        d = r[side]
        gf = d["train_gflops"]
        d.update(
            of_peak_2=gf / peak["gflops_2"],
            of_peak_1x2=gf / (2 * peak["gflops_1"]),
            of_step_2=gf / peak[f"gflops_{step}_2"],
            of_step_1x2=gf / (2 * peak[f"gflops_{step}_1"]),
        )
        for p in precisions:
            key = "sample_chars_per_sec" if p == "fp32" else f"sample_{p}_chars_per_sec"
            if key not in d or (side == "torch" and p != "fp32"):
                continue
            nbytes = sampled_bytes(size["layers"], size["hidden"], p)
            limit = peak[f"weights_gbs_{nbytes}"] * 1e9 / nbytes
            r.setdefault("stream_limit", {})[p] = limit
            d[key.replace("chars_per_sec", "of_stream")] = d[key] / limit
            if p == "fp32" and f"weights_gbs_{nbytes}_2" in peak:  # two cores, each half the weights
                limit2 = peak[f"weights_gbs_{nbytes}_2"] * 1e9 / nbytes
                r.setdefault("stream_limit_2", {})[p] = limit2
                d["sample_of_stream_2"] = d[key] / limit2


def measure_pair(name, repeats):
    """Two trainings started together against one alone, alternately."""
    size = SIZES[name]
    steps, warmup = (30, 2) if size["hidden"] <= 128 else (6, 1)
    cmd = charrnn_cmd("train", **size, steps=steps, warmup=warmup)
    solo, pair, slower = [], [], []
    for rep in range(repeats):
        log(f"pair {name}: repeat {rep + 1}/{repeats}")
        solo.append(run_json(cmd)["chars_per_sec"])
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
        ]
        rates = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(err[-2000:])
            rates.append(json.loads(out.strip().splitlines()[-1])["chars_per_sec"])
        pair.append(sum(rates))
        slower.append(min(rates))
    return {
        "solo_runs": [round(x) for x in solo],
        "pair_sum_runs": [round(x) for x in pair],
        "ratio": statistics.median(pair) / statistics.median(solo),
        "slower_runs": [round(x) for x in slower],
        "slower_ratio": statistics.median(slower) / statistics.median(solo),
    }


def background(cmd, threads=None):
    """Start a child that keeps a core (or two) busy until stopped."""
    env = dict(os.environ, **({"CHARRNN_THREADS": str(threads)} if threads else {}))
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def stop(proc):
    proc.terminate()
    proc.wait()


def measure_beside(name, repeats, length):
    """Batch-1 sampling at size name alone, then beside a training, alternately:
    - beside a one-thread 2x256 training (a training "on the other core"): the default path
      (the Switch choosing as it samples) and the serial path, against the default path alone;
    - beside a training on both cores: the default, serial and split paths (no core is free,
      so the sample can only hold its share of them)."""
    size = SIZES[name]
    trainer = charrnn_cmd("train", **SIZES["2x256"], steps=100000, warmup=1)
    kw = dict(layers=size["layers"], hidden=size["hidden"], length=length)
    paths = {"default": None, "serial": False, "split": True}
    runs = {k: [] for k in ("alone", "one_default", "one_serial", "two_default", "two_serial", "two_split")}
    for rep in range(repeats):
        log(f"beside {name}: repeat {rep + 1}/{repeats}")
        runs["alone"].append(run_json(charrnn_cmd("sample", **kw))["chars_per_sec"])
        for threads, kinds in ((1, ("default", "serial")), (None, ("default", "serial", "split"))):
            proc = background(trainer, threads)
            try:
                time.sleep(5)  # past its start-up: the training is running
                for k in kinds:
                    rate = run_json(charrnn_cmd("sample", **kw, parallel=paths[k]))["chars_per_sec"]
                    runs[f"{'one' if threads else 'two'}_{k}"].append(rate)
            finally:
                stop(proc)
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        **{f"{k}_runs": [round(x) for x in v] for k, v in runs.items()},
        "of_alone": med["one_default"] / med["alone"],
        "ratio": med["two_default"] / med["two_serial"],
        "split_ratio": med["two_split"] / med["two_serial"],
    }


def measure_train_beside(repeats):
    """A 2x256 training on all cores, alone and beside a 2x512 batch-1 sample (the default
    path) that runs for the whole of it, alternately."""
    cmd = charrnn_cmd("train", **SIZES["2x256"], steps=30, warmup=1)
    sampler = charrnn_cmd("sample", layers=2, hidden=512, length=10**7)
    alone, beside = [], []
    for rep in range(repeats):
        log(f"training beside a sample: repeat {rep + 1}/{repeats}")
        alone.append(run_json(cmd)["chars_per_sec"])
        proc = background(sampler)
        try:
            time.sleep(3)  # past its start-up and warm-up: the sample is running
            beside.append(run_json(cmd)["chars_per_sec"])
        finally:
            stop(proc)
    return {
        "alone_runs": [round(x) for x in alone],
        "beside_runs": [round(x) for x in beside],
        "ratio": statistics.median(beside) / statistics.median(alone),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: " + ",".join(SIZES))
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ",".join(SECTIONS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--steps",
        type=int,
        default=0,
        help="training steps per run (default: 40 at 2x128, 12 at 2x256, 6 at 2x512)",
    )
    ap.add_argument(
        "--length",
        type=int,
        default=0,
        help="sampled characters per run (default: 5000; PyTorch's loop 1000 at 2x512)",
    )
    ap.add_argument(
        "--torch-python",
        default=os.environ.get("CHARRNN_TORCH_PYTHON"),
        help="a Python with torch installed, to measure PyTorch beside charrnn",
    )
    ap.add_argument(
        "--baseline",
        help="another charrnn checkout (say, the last release) to measure alternately with this one",
    )
    ap.add_argument(
        "--precisions",
        default=",".join(PRECISIONS),
        help="comma-separated weight precisions to sample at: " + ",".join(PRECISIONS),
    )
    ap.add_argument(
        "--train-precisions",
        default="auto",
        help="comma-separated precisions of training's products: fp32, bf16 (auto: fp32, and bf16 "
        "where the CPU has AVX512-BF16)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = {"train": child_train, "sample": child_sample, "peak": child_peak}[args.child[0]]
        print(json.dumps(fn(**json.loads(args.child[1]))))
        return
    sections = args.sections.split(",")
    env = environment()
    log("environment:", json.dumps(env))
    results = {
        "environment": env,
        "repeats": args.repeats,
        "sizes": {},
        "precisions": args.precisions.split(","),
        "train_precisions": train_precisions(args),
    }
    peaks = []
    sizes = args.sizes.split(",")
    peak_kw = dict(
        repeats=5,
        shapes=[(SIZES[n]["batch"], SIZES[n]["hidden"], 4 * SIZES[n]["hidden"]) for n in sizes],
        footprints=sorted(
            {
                sampled_bytes(SIZES[n]["layers"], SIZES[n]["hidden"], p)
                for n in sizes
                for p in args.precisions.split(",")
            }
        ),
    )
    if "peak" in sections:
        peaks.append(run_json(charrnn_cmd("peak", **peak_kw)))
    if "train" in sections:
        for name in sizes:
            results["sizes"][name] = measure_size(name, args)
    if "peak" in sections:  # once more at the end: the best of both is the machine's rate
        peaks.append(run_json(charrnn_cmd("peak", **peak_kw)))
        results["peak"] = peak = {k: max(p[k] for p in peaks) for k in peaks[0]}
        results["peak_runs"] = peaks
        for name, r in results["sizes"].items():
            shares(r, SIZES[name], peak, args.precisions.split(","))
    if "startup" in sections:
        results["startup_seconds"] = startup_seconds(max(args.repeats, 5))
    if "pair" in sections:
        results["pair"] = {n: measure_pair(n, args.repeats) for n in ("2x128", "2x512")}
    if "beside" in sections:
        results["beside"] = {n: measure_beside(n, args.repeats, 2000) for n in sizes}
        results["train_beside"] = measure_train_beside(args.repeats)
    results["environment"]["load_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)


def table_rows(precisions, trained=()):
    """(key, label, format) of each row of a size in the table."""
    rows = [("train_chars_per_sec", "training chars/s", ",.0f")]
    for p in trained:
        if p != "fp32":
            rows += [
                (
                    f"train_{p}_chars_per_sec",
                    f"training chars/s, {p} products (PyTorch: autocast {p})",
                    ",.0f",
                ),
                (f"train_{p}_over_fp32", f"training {p} over fp32, same side (each run)", ".2f"),
            ]
    rows += [
        ("of_peak_2", "training, share of 2-thread SGEMM 1024^3", ".0%"),
        (
            "of_step_1x2",
            "training, share of 2 x 1-thread SGEMM at the step's shape (as charrnn runs it: a part per core)",
            ".0%",
        ),
    ]
    for p in precisions:
        key = "sample" if p == "fp32" else f"sample_{p}"
        vs = "" if p == "fp32" else "; ratio against PyTorch's fp32 loop"
        rows += [
            (f"{key}_chars_per_sec", f"sampling chars/s (batch 1, {p}{vs})", ",.0f"),
            (f"{key}_of_stream", f"sampling {p}, share of 1-thread weight streaming", ".0%"),
        ]
        if p == "fp32":
            rows += [
                ("sample_of_stream_2", "sampling fp32, share of 2-thread weight streaming", ".0%"),
                ("split_share", "sampling fp32, characters the two-core split path made", ".0%"),
                ("sample_b64_chars_per_sec", "sampling chars/s, 64 rows at once (fp32, summed)", ",.0f"),
            ]
    return rows + [("peak_rss_mb", "peak RSS training (MB)", ",.0f")]


def print_machine(res):
    """The machine's rates measured in the run (child_peak), and the sampling limits."""
    p = res["peak"]
    steps = [
        k[len("gflops_") : -2]
        for k in p
        if k.startswith("gflops_") and k.endswith("_1") and k.count("x") == 2
    ]
    print(f"\nThe machine in this run (best of {len(res['peak_runs'])} x 5 timings each):")
    print(
        f"- SGEMM fp32 1024^3: {p['gflops_1']:.0f} GFLOP/s on one thread, {p['gflops_2']:.0f} "
        "on two (SciPy's OpenBLAS through Numba, the BLAS charrnn's training calls)"
    )
    for s in steps:
        print(
            f"- SGEMM at a step's shape ({s.replace('x', ', ', 1).replace('x', ' @ ', 1)}"
            f" cols): {p[f'gflops_{s}_1']:.0f} GFLOP/s on one thread, "
            f"{p[f'gflops_{s}_2']:.0f} on two"
        )
    if "gflops_bf16_1" in p:
        print(
            f"- bf16 products 1024^3 (bf16 inputs, float32 sums; {p['bf16_engine']}): "
            f"{p['gflops_bf16_1']:.0f} GFLOP/s on one thread, {p['gflops_bf16_2']:.0f} on two"
        )
    print(f"- streaming read, one thread, 256 MB: {p['stream_gbs']:.1f} GB/s")
    for name, r in res["sizes"].items():
        for prec, limit in r.get("stream_limit", {}).items():
            cfg = r["config"]
            nbytes = sampled_bytes(cfg["layers"], cfg["hidden"], prec)
            print(
                f"- weight streaming, one thread, {nbytes / 1e6:.2f} MB ({name} {prec} "
                f"weights): {p[f'weights_gbs_{nbytes}']:.1f} GB/s, so at most "
                f"{limit:,.0f} chars/s batch-1 at {name} {prec}"
            )
            if prec in r.get("stream_limit_2", {}):
                print(
                    f"- weight streaming, two threads (each half of those {nbytes / 1e6:.2f} MB): "
                    f"{p[f'weights_gbs_{nbytes}_2']:.1f} GB/s, so at most "
                    f"{r['stream_limit_2'][prec]:,.0f} chars/s batch-1 at {name} {prec} on two cores"
                )


def print_table(res):
    env = res["environment"]
    print(
        f"# charrnn {env['charrnn']} on {env['lscpu'] or env['cpu']} ({env['cores']} cores, "
        f"LLVM target "
        f"{env['llvm_cpu']}, BLAS {'; '.join(env['blas'])}), numba {env['numba']}, numpy "
        f"{env['numpy']}; {env['date']}; OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} "
        f"OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}; medians of {res['repeats']} runs; "
        f"load average {env['load_before']:.1f} before, {env['load_after']:.1f} after (the "
        f"benchmark alone keeps it near 1-2; above that, other programs shared the "
        f"{env['cores']} cores)"
    )
    print("| model | measure | charrnn | PyTorch | ratio (each run) | baseline | speed-up |")
    print("| --- | --- | ---: | ---: | --- | ---: | --- |")
    for name, r in res["sizes"].items():
        c = r["charrnn"]
        t = r.get("torch", {})
        q = r.get("ratio", {})
        b = r.get("before", {})
        u = r.get("speedup", {})
        cfg = r["config"]
        label = f"{name} (B{cfg['batch']} T{cfg['seq']})"
        for key, what, fmt in table_rows(res.get("precisions", ["fp32"]), res.get("train_precisions", ())):
            if key not in c:
                continue
            tv = format(t[key], fmt) if key in t else "-"
            qv = f"{q[key]:.2f}x" if key in q else "-"
            bv = format(b[key], fmt) if key in b else "-"
            uv = f"{u[key]:.2f}x" if key in u else "-"
            if key == "train_chars_per_sec" and "train_runs" in q:
                qv += " (" + ", ".join(f"{x:.2f}" for x in q["train_runs"]) + ")"
            if key.startswith("train_") and key.endswith("_chars_per_sec") and key != "train_chars_per_sec":
                runs = q.get(key[: -len("_chars_per_sec")] + "_runs")
                if runs:
                    qv += " (" + ", ".join(f"{x:.2f}" for x in runs) + ")"
            if key.endswith("_over_fp32"):  # a ratio within each side, not against PyTorch
                tv = f"{t[key]:.2f}x" if key in t else "-"
                runs = ", ".join(f"{x:.2f}" for x in c.get(key + "_runs", []))
                print(f"| {label} | {what} | {c[key]:.2f}x ({runs}) | {tv} | - | - | - |")
                continue
            if key == "train_chars_per_sec" and "train_runs" in u:
                uv += " (" + ", ".join(f"{x:.2f}" for x in u["train_runs"]) + ")"
            print(f"| {label} | {what} | {format(c[key], fmt)} | {tv} | {qv} | {bv} | {uv} |")
    if "peak" in res:
        print_machine(res)
    if "startup_seconds" in res:
        print(f"start-up, `charrnn sample -n 100`, warm cache: {res['startup_seconds']:.2f} s")
    for name, r in res.get("pair", {}).items():
        print(
            f"two {name} trainings together: {r['ratio']:.0%} of one alone summed, the slower "
            f"of the two at {r['slower_ratio']:.0%} (solo {r['solo_runs']}, pair sums "
            f"{r['pair_sum_runs']}, slower {r['slower_runs']} chars/s)"
        )
    for name, r in res.get("beside", {}).items():
        print(
            f"{name} sampling beside a one-thread training (the other core busy): "
            f"{r['of_alone']:.0%} of its speed alone (alone {r['alone_runs']}, beside: default "
            f"path {r['one_default_runs']}, serial path {r['one_serial_runs']} chars/s)"
        )
        print(
            f"{name} sampling beside a training on both cores: the default path at "
            f"{r['ratio']:.0%} of the serial path's speed, the split path at "
            f"{r['split_ratio']:.0%} (default {r['two_default_runs']}, serial "
            f"{r['two_serial_runs']}, split {r['two_split_runs']} chars/s)"
        )
    if "train_beside" in res:
        r = res["train_beside"]
        print(
            f"2x256 training beside a 2x512 batch-1 sample: {r['ratio']:.0%} of its speed alone "
            f"(alone {r['alone_runs']}, beside {r['beside_runs']} chars/s)"
        )


if __name__ == "__main__":
    main()
