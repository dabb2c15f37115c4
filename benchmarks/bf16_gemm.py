#!/usr/bin/env python
"""GFLOP/s of a training window's products in float32 (gemm.py) against bf16 (bgemm.py), at
the shapes charrnn's training actually multiplies, side by side on this machine (issue 41,
lever 1).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bf16_gemm.py
    ... --sizes 512,640 --batch 16 --seq 100 --threads 2 --repeats 7

A window of B streams is cut into one part per thread (model.Model.parts); each part of b
streams makes, per layer and window, with K = 4H and M = T*b rows (see kernels.py):

  rec fwd    (b, H) @ (H, K)       T times per layer, Wh packed      (kernels.cell_step)
  rec bwd    (b, K) @ (K, H)       T times per layer, Wh^T packed    (kernels.rec_back)
  input      (M, H) @ (H, K)       layers above the first            (kernels.forward)
  dH below   (M, K) @ (K, H)       layers above the first            (kernels.backward)
  dW         (H, M) @ (M, K)       += X^T dG, once per weight matrix (kernels.grad_acc)

Each is timed in three forms, alternately, each repeat in a jitted loop of ~50 ms, medians of
the repeats:

  fp32       gemm.matmul / gemm.matmul_tn_acc, today's training products
  bf16       bgemm.matmul / bgemm.matmul_tn_acc (vdpbf16ps), with the conversion of the
             product's float32 input to bf16 counted in (the weights are packed once a step)
  amx        amx.matmul / amx.matmul_tn_acc (TDPBF16PS on AMX tiles, where the CPU has them),
             the same layouts with k padded to whole tiles, the conversion counted in
  bf16w      bf16 weights widened to float32 in registers, float32 multiply-adds
             (qgemm.matmul, the sampler's bf16): half the bytes, no bf16 arithmetic
             (the products with a packed weight only)

With --threads 2 the same product also runs on both cores at once, each thread its own rows
and output and the packed weights shared, as the parts of a training window run; GFLOP/s per
thread. The `window` lines weigh each product by how often a window makes it.

Training steps (--train-steps N, 0 to skip): a window's loss_and_grad and an Adam step of a
2-layer LSTM at each size, B x T as given, its products in fp32 and in bf16 (the engine
`charrnn train --precision bf16` uses here: AMX tiles where there are, else vdpbf16ps),
alternately, N steps each time; characters/s, medians, and the range of the pairs' ratios.

Peaks, measured in the same run: one core's instruction rate of vfmadd231ps and of vdpbf16ps
on zmm registers (24 independent sums, no memory), the SGEMM rate at 1024^3 of the BLAS
Numba calls (as bench.py measures it) and of gemm.matmul, and bgemm.matmul's at 1024^3. With
--torch-python, PyTorch's fp32 and bf16 torch.matmul on one thread at 1024^3 and at each
shape (oneDNN's kernels: on a CPU with AMX, its bf16 runs on the tiles), in a child process:
the machine's bf16 rate beside what vdpbf16ps reaches.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from charrnn.engine import amx, bf16ops, bgemm as BG, gemm, precision, qgemm, threads, vec  # noqa: E402


def machine():
    """lscpu's model name and its vector and matrix flags, and the LLVM target."""
    import llvmlite.binding as ll
    import numba

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = ""
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    name = info.get("Model name", platform.processor()).strip()
    flags = [f for f in info.get("Flags", "").split() if f.startswith(("avx512", "amx", "fma"))]
    return (
        f"{name}, {os.cpu_count()} cpus, LLVM target {ll.get_host_cpu_name()}, numba {numba.__version__}, "
        f"numpy {np.__version__}\nflags: {' '.join(flags)}"
    )


# ---------------------------------------------------------------------------------------------
# Jitted loops: n products each, so no Python call is timed


@njit(nogil=True)
def f32_nn(A, Wp, C, n):
    for _ in range(n):
        gemm.matmul(A, Wp, C)


@njit(nogil=True)
def f32_tn(X, G, C, Gp, n):
    for _ in range(n):
        gemm.matmul_tn_acc(X, G, C, Gp)


@njit(nogil=True)
def b16_nn(A, Ab, Bp, C, n):
    for _ in range(n):
        BG.convert_rows(A, Ab)
        BG.matmul(Ab, Bp, C, False)


@njit(nogil=True)
def b16_tn(X, G, C, Xp, Gp, n):
    for _ in range(n):
        BG.matmul_tn_acc(X, G, C, Xp, Gp)


@njit(nogil=True)
def amx_nn(A, Ab, Bp, C, cfg, n):
    for _ in range(n):
        BG.convert_rows(A, Ab)
        amx.matmul(Ab, Bp, C, False, cfg)


@njit(nogil=True)
def amx_tn(X, G, C, Xp, Gp, cfg, n):
    for _ in range(n):
        amx.matmul_tn_acc(X, G, C, Xp, Gp, cfg)


@njit(nogil=True)
def b16w_nn(A, Wq, S, C, n):
    for _ in range(n):
        qgemm.matmul(A, Wq, S, C)


@njit(nogil=True)
def blas(A, B, C, n):
    for _ in range(n):
        np.dot(A, B, C)


def instruction_loop(accumulators, bf16):
    """A jitted loop of `accumulators` independent vdpbf16ps (or vfmadd231ps) chains on
    registers: one core's peak rate of the instruction."""
    names = [f"c{i}" for i in range(accumulators)]
    op = "ops.vdot({a}, x, y)" if bf16 else "vec.vfma(x, y, {a})"
    body = "\n".join(f"        {a} = {op.format(a=a)}" for a in names)
    stores = "\n".join(f"    vec.vstore(C, {16 * i}, {a})" for i, a in enumerate(names))
    load = (
        "x = ops.psplat(A, 0)\n    y = ops.pload(A, 0)"
        if bf16
        else "x = vec.vsplat(C, 0)\n    y = vec.vload(C, 0)"
    )
    src = (
        f"def loop(A, C, n):\n    {' = '.join(names)} = vec.vzero(C)\n    {load}\n"
        f"    for _ in range(n):\n{body}\n{stores}\n"
    )
    ns = {"ops": bf16ops, "vec": vec}
    exec(src, ns)
    return njit(nogil=True)(ns["loop"])


# ---------------------------------------------------------------------------------------------
# Timing


def timed(fn, args, n, nthreads, pool):
    """Seconds for fn(*args[i], n) on each of nthreads threads at once (the slowest)."""
    if nthreads == 1:
        t = time.perf_counter()
        fn(*args[0], n)
        return time.perf_counter() - t
    t = time.perf_counter()
    jobs = [pool.submit(fn, *args[i], n) for i in range(nthreads)]
    for j in jobs:
        j.result()
    return time.perf_counter() - t


def reps_for(fn, args, nthreads, pool, seconds=0.05):
    fn(*args[0], 1)
    n = 1
    while timed(fn, args, n, nthreads, pool) < seconds:
        n *= 2
    return n


def compare(forms, flops, repeats, nthreads, pool):
    """{form: median GFLOP/s per thread}: the forms (name -> (fn, per-thread args)) timed in
    turn, repeat after repeat."""
    ns = {k: reps_for(fn, args, nthreads, pool) for k, (fn, args) in forms.items()}
    rates = {k: [] for k in forms}
    for _ in range(repeats):
        for k, (fn, args) in forms.items():
            rates[k].append(ns[k] * flops / timed(fn, args, ns[k], nthreads, pool) / 1e9)
    return {k: statistics.median(v) for k, v in rates.items()}


def product_forms(kind, m, k, n, nthreads, rng):
    """The forms of one product (see the module's docstring), each thread its own inputs and
    outputs, the packed weights shared."""
    f32 = np.float32
    if kind == "tn":  # C (k, n) += X (m, k)^T @ G (m, n)
        kc = BG.even(min(gemm.KC, m))
        ins = [
            (rng.standard_normal((m, k)).astype(f32), rng.standard_normal((m, n)).astype(f32))
            for _ in range(nthreads)
        ]
        outs = [np.zeros((k, n), f32) for _ in range(nthreads)]
        forms = {
            "fp32": (f32_tn, [(X, G, C, np.zeros(kc * n, f32)) for (X, G), C in zip(ins, outs)]),
            "bf16": (
                b16_tn,
                [
                    (X, G, C, np.zeros(k * kc, np.uint16), np.zeros(kc * n, np.uint16))
                    for (X, G), C in zip(ins, outs)
                ],
            ),
        }
        if amx.available():
            kt = amx.padded(min(gemm.KC, m))
            forms["amx"] = (
                amx_tn,
                [
                    (X, G, C, np.zeros(k * kt, np.uint16), np.zeros(kt * n, np.uint16), amx.config_buffer())
                    for (X, G), C in zip(ins, outs)
                ],
            )
        return forms
    W = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(f32)
    Wp = np.zeros(k * n, f32)
    gemm.pack(W, Wp)
    Bp = np.zeros(BG.even(k) * n, np.uint16)
    BG.pack(W, Bp)
    Wq, S = precision.pack(W, "bf16")
    As = [rng.standard_normal((m, k)).astype(f32) for _ in range(nthreads)]
    Cs = [np.zeros((m, n), f32) for _ in range(nthreads)]
    forms = {
        "fp32": (f32_nn, [(A, Wp, C) for A, C in zip(As, Cs)]),
        "bf16": (b16_nn, [(A, np.zeros(m * BG.even(k), np.uint16), Bp, C) for A, C in zip(As, Cs)]),
        "bf16w": (b16w_nn, [(A, Wq, S, C) for A, C in zip(As, Cs)]),
    }
    if amx.available():
        kt = amx.padded(k)
        Bt = np.zeros(kt * n, np.uint16)
        BG.pack(W, Bt)
        forms["amx"] = (
            amx_nn,
            [(A, np.zeros(m * kt, np.uint16), Bt, C, amx.config_buffer()) for A, C in zip(As, Cs)],
        )
    return forms


def window_products(H, b, T, L=2):
    """(name, kind, m, k, n, times a window makes it) of one part of b streams, LSTM."""
    K, M = 4 * H, T * b
    return [
        ("rec fwd", "nn", b, H, K, T * L),
        ("rec bwd", "nn", b, K, H, T * L),
        ("input", "nn", M, H, K, L - 1),
        ("dH below", "nn", M, K, H, L - 1),
        ("dW", "tn", M, H, K, 2 * L - 1),
    ]


def peaks(repeats, pool):
    rng = np.random.default_rng(0)
    C = np.zeros(16 * 24, np.float32)
    A = np.zeros(64, np.uint16)
    fma, dot = instruction_loop(24, False), instruction_loop(24, True)
    r = compare({"vfmadd231ps": (fma, [(A, C)]), "vdpbf16ps": (dot, [(A, C)])}, 24.0, repeats, 1, pool)
    print(
        f"peak, one core, 24 independent sums on zmm: vfmadd231ps {r['vfmadd231ps'] * 32:.0f} GFLOP/s "
        f"({r['vfmadd231ps']:.2f} G instructions/s), vdpbf16ps {r['vdpbf16ps'] * 64:.0f} GFLOP/s "
        f"({r['vdpbf16ps']:.2f} G/s)"
    )
    m = 1024
    A32 = rng.standard_normal((m, m)).astype(np.float32)
    forms = product_forms("nn", m, m, m, 1, rng)
    forms["blas"] = (
        blas,
        [(A32, rng.standard_normal((m, m)).astype(np.float32), np.zeros((m, m), np.float32))],
    )
    del forms["bf16w"]
    r = compare(forms, 2.0 * m**3, repeats, 1, pool)
    print(
        f"1024^3 on one thread: BLAS SGEMM {r['blas']:.0f} GFLOP/s, gemm.matmul {r['fp32']:.0f}, "
        f"bgemm.matmul {r['bf16']:.0f}, amx.matmul {r.get('amx', float('nan')):.0f} "
        "(with the conversion of A)"
    )


TORCH_CHILD = """
import json, sys, time, torch
torch.set_num_threads(1)
def rate(a, b, repeats):
    torch.matmul(a, b)
    n, best = 1, 0.0
    while True:
        t = time.perf_counter()
        for _ in range(n):
            torch.matmul(a, b)
        dt = time.perf_counter() - t
        if dt > 0.05:
            break
        n *= 2
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            torch.matmul(a, b)
        best = max(best, n / (time.perf_counter() - t))
    return best * 2.0 * a.shape[0] * a.shape[1] * b.shape[1] / 1e9
shapes, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
out = {}
for m, k, n in shapes:
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        out[f"{m}x{k}x{n} {name}"] = rate(torch.randn(m, k).to(dt), torch.randn(k, n).to(dt), repeats)
print(json.dumps(out))
"""


def torch_rates(python, shapes, repeats):
    """{"MxKxN fp32|bf16": best GFLOP/s} of torch.matmul on one thread, in a child process."""
    import json

    r = subprocess.run(
        [python, "-c", TORCH_CHILD, json.dumps(shapes), str(repeats)], capture_output=True, text=True
    )
    if r.returncode != 0:
        print(f"# torch child failed: {r.stderr.strip().splitlines()[-1:]}")
        return {}
    return json.loads(r.stdout)


def training_rates(H, batch, seq, steps, repeats, dropout=0.2):
    """{precision: [chars/s of each repeat]} of training steps at 2 x H (fixed dropout masks)."""
    from charrnn.engine.model import Model, ModelConfig, dropout_masks
    from charrnn.engine.optim import Adam

    m = Model(ModelConfig("lstm", 2, H, 65, dropout=dropout)).init_weights(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x = rng.integers(0, 65, (seq, batch)).astype(np.int32)
    masks = dropout_masks(rng, (2, seq, batch, H), dropout, np.float32)
    h, c = m.zero_state(batch)
    flat, grads = m.zeros_like_params()
    opt = Adam(m.flat, lr=1e-4)

    def run(precision, n):
        t = time.perf_counter()
        for _ in range(n):
            flat[:] = 0
            m.loss_and_grad(x, x, h, c, grads, masks, precision=precision)
            opt.step(m.flat, flat, 1e-6)
        return n * batch * seq / (time.perf_counter() - t)

    rates = {"fp32": [], "bf16": []}
    for p in rates:
        run(p, 2)  # compiled, buffers allocated, caches warm
    for _ in range(repeats):
        for p in rates:
            rates[p].append(run(p, steps))
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="512,640", help="hidden sizes (2-layer LSTMs)")
    ap.add_argument("--batch", type=int, default=16, help="B, streams of a window (config.py's default)")
    ap.add_argument("--seq", type=int, default=100, help="T, window length (config.py's default)")
    ap.add_argument("--threads", type=int, default=2, help="parts of a window, one per thread")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--train-steps", type=int, default=5, help="training steps a repeat (0: skip)")
    ap.add_argument("--torch-python", help="a Python with PyTorch: its fp32 and bf16 matmul beside")
    a = ap.parse_args()
    if not BG.available():
        sys.exit("this CPU has no AVX512-BF16 (vdpbf16ps): nothing to compare")
    threads.single_threaded_blas()
    b = a.batch // a.threads
    nan = float("nan")
    print(f"# bf16_gemm on {machine()}")
    print(
        f"# B {a.batch} x T {a.seq}, {a.threads} parts of {b} streams; medians of {a.repeats}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')} "
        f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE')}; load {os.getloadavg()[0]:.2f} before"
    )
    pool = ThreadPoolExecutor(max(2, a.threads))
    peaks(a.repeats, pool)
    rng = np.random.default_rng(1)
    print(
        f"\n{'product':<34}{'x/window':>9}{'thr':>4}{'fp32':>8}{'bf16':>8}{'bf16w':>8}{'amx':>8}"
        f"{'bf16/fp32':>11}{'amx/fp32':>10}"
    )
    for H in (int(s) for s in a.sizes.split(",")):
        for nt in sorted({1, a.threads}):
            secs = {"fp32": 0.0, "bf16": 0.0, "amx": 0.0, "best": 0.0}
            for name, kind, m, k, n, times in window_products(H, b, a.seq):
                r = compare(product_forms(kind, m, k, n, nt, rng), 2.0 * m * k * n, a.repeats, nt, pool)
                flops = 2.0 * m * k * n * times / 1e9
                secs["fp32"] += flops / r["fp32"]
                secs["bf16"] += flops / r["bf16"]
                secs["amx"] += flops / r.get("amx", float("nan"))
                secs["best"] += flops / max(r.values())
                shape = f"({m},{k})@({k},{n})" if kind == "nn" else f"({k},{m})@({m},{n})"
                print(
                    f"2x{H} {name:<9}{shape:<20}{times:>9}{nt:>4}{r['fp32']:>8.0f}{r['bf16']:>8.0f}"
                    f"{r.get('bf16w', nan):>8.0f}{r.get('amx', nan):>8.0f}{r['bf16'] / r['fp32']:>10.2f}x"
                    f"{r.get('amx', nan) / r['fp32']:>9.2f}x"
                )
            print(
                f"2x{H} window, {nt} thread{'s' if nt > 1 else ' '}: "
                f"products {secs['fp32'] * 1e3:.1f} ms fp32, "
                f"{secs['bf16'] * 1e3:.1f} ms bf16 ({secs['fp32'] / secs['bf16']:.2f}x), "
                f"{secs['amx'] * 1e3:.1f} ms amx ({secs['fp32'] / secs['amx']:.2f}x), "
                f"{secs['best'] * 1e3:.1f} ms taking the fastest form of each "
                f"({secs['fp32'] / secs['best']:.2f}x)"
            )
    if a.train_steps:
        from charrnn.engine.model import bf16_engine

        print(f"\ntraining steps (loss_and_grad + Adam, dropout 0.2), bf16 on {bf16_engine()}:")
        for H in (int(s) for s in a.sizes.split(",")):
            r = training_rates(H, a.batch, a.seq, a.train_steps, a.repeats)
            f, g = statistics.median(r["fp32"]), statistics.median(r["bf16"])
            pairs = [y / x for x, y in zip(r["fp32"], r["bf16"])]
            print(
                f"  2x{H} B{a.batch} T{a.seq}: fp32 {f:,.0f} chars/s, bf16 {g:,.0f} chars/s: "
                f"{g / f:.2f}x (pairs {min(pairs):.2f}-{max(pairs):.2f})"
            )
    if a.torch_python:
        shapes = [(1024, 1024, 1024)] + [
            (m, k, n)
            for H in (int(s) for s in a.sizes.split(","))
            for _, kind, m, k, n, _ in window_products(H, b, a.seq)
            if kind == "nn"
        ]
        r = torch_rates(a.torch_python, shapes, a.repeats)
        print("\ntorch.matmul, one thread, best of the repeats (GFLOP/s):")
        for m, k, n in shapes:
            key = f"{m}x{k}x{n}"
            if f"{key} fp32" in r:
                print(
                    f"  ({m},{k})@({k},{n}): fp32 {r[key + ' fp32']:.0f}, bf16 {r[key + ' bf16']:.0f}"
                    f" ({r[key + ' bf16'] / r[key + ' fp32']:.1f}x)"
                )
    print(f"# load {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
