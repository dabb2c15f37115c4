#!/usr/bin/env python
"""Where a charrnn training step spends its time, piece by piece, on one core.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/profile_train.py

A training step splits its B streams into one part per core (model.Model.parts) and runs the
fused window kernel (kernels.window_grad) on each part with single-threaded BLAS. This script
takes one such part (B / threads streams) and times, on one thread, each piece that kernel
runs, using the package's own kernels with the same shapes, each in a jitted loop so no Python
call overhead is counted:

  pack Wh        Wh and Wh^T of every layer packed for the products below, once per window
  rec fwd        h_{t-1} (b, H) @ Wh (H, K)            T x L small products per window
  gates fwd      the cell's non-linearities             T x L
  rec bwd        dG_t (b, K) @ Wh^T (K, H)              T x L small products
  gates bwd      the cell's backward step               T x L
  window GEMMs   input projections of layers > 0, the decoder, and every weight gradient and
                 gradient to the layer below: one product each per window; the (H, 4H) ones
                 packed (gemm.py) where the kernel packs them, OpenBLAS's figure beside them
  embed, xent    the first layer's row lookup (and its gradient scatter), softmax + loss
  Adam           the optimizer over all parameters (once per step, not per part)

It prints each piece's time per window, its share of the whole fused kernel, and the GEMMs'
GFLOP/s next to a large single-thread GEMM's (what this core's BLAS can do at best). The
"rest" row is the fused kernel's time minus the sum of the pieces. The pieces are timed in
turn, round after round, so a host whose speed drifts shifts them all alike. The recurrent
products are also timed through OpenBLAS for comparison (not counted when packed).

Sections (--only): blas (which BLAS, its SGEMM rates on 1 and 2 threads), kernel (the above),
step (a whole step on all threads, wall clock, and each piece outside the fused kernel).
"""

import argparse
import os
import platform
import statistics
import time


import numpy as np  # noqa: E402

from charrnn.engine import gemm as gemm_mod, kernels, threads  # noqa: E402
from charrnn.engine.kernels import kernel  # noqa: E402
from charrnn.engine.buffers import alloc_work  # noqa: E402
from charrnn.engine.model import Model, ModelConfig  # noqa: E402
from charrnn.engine.optim import Adam  # noqa: E402

from bench import cpu_model  # noqa: E402  (this directory's)

SIZES = {
    "2x128": dict(layers=2, hidden=128, batch=50, seq=50),
    "2x256": dict(layers=2, hidden=256, batch=64, seq=100),
    "2x512": dict(layers=2, hidden=512, batch=64, seq=100),
    "2x640": dict(layers=2, hidden=640, batch=16, seq=100),  # the 15-minute preset, default batch
}


@kernel
def rec_bwd(dG, W, dh, n):
    WT = W.T
    for _ in range(n):
        np.dot(dG, WT, dh)


@kernel
def packed_loop(A, Wp, C, n):
    for _ in range(n):
        gemm_mod.matmul(A, Wp, C)


@kernel
def gates_fwd(G, c_prev, c, tc, h, n):
    for _ in range(n):
        kernels.lstm_step(G, c_prev, c, tc, h)


@kernel
def gates_bwd(g, c_prev, tc, dh, dc, dG, n):
    for _ in range(n):
        kernels.lstm_step_back(g, c_prev, tc, dh, dc, dG)


@kernel
def gemm(A, B, C, n):
    for _ in range(n):
        np.dot(A, B, C)


@kernel
def gemm_tn(A, B, C, n):
    """C = A^T @ B: the weight-gradient shape."""
    for _ in range(n):
        np.dot(A.T, B, C)


@kernel
def packed_tn_loop(A, B, C, n):
    """C += A^T @ B through the packed weight-gradient kernel."""
    Gp = np.empty(gemm_mod.KC * B.shape[1], C.dtype)
    for _ in range(n):
        gemm_mod.matmul_tn_acc(A, B, C, Gp)


@kernel
def embed_loop(p, x, G, n):
    for _ in range(n):
        for t in range(x.shape[0]):
            kernels.embed(p, x[t], G[t])


@kernel
def scatter_loop(dWx0, x, dG, n):
    for _ in range(n):
        for t in range(x.shape[0]):
            for bb in range(x.shape[1]):
                dWx0[x[t, bb]] += dG[t, bb]


@kernel
def xent_loop(P, Psave, y, n):
    total = 0.0
    for _ in range(n):
        P[:] = Psave
        total += kernels.xent(P, y, True, 0)
    return total


@kernel
def copy_loop(P, Psave, n):
    for _ in range(n):
        P[:] = Psave


def timeit(fn, *args, repeats=5, clock=time.thread_time):
    """Median seconds of one call of fn(*args) (after a warm-up call). The default clock is this
    thread's CPU time: on a shared machine the wall clock also counts the time other processes
    hold the core, the thread's CPU time only what it ran (caches they evict still count)."""
    fn(*args)
    out = []
    for _ in range(repeats):
        t0 = clock()
        fn(*args)
        out.append(clock() - t0)
    return statistics.median(out)


def round_robin(pieces, repeats):
    """Median seconds of each piece (label, fn, args, count): count calls of fn(*args), the
    pieces timed in turn, `repeats` rounds, so a machine whose speed drifts (a shared host)
    shifts all of them alike."""
    for _, fn, args, _ in pieces:
        fn(*args)
    times = {label: [] for label, _, _, _ in pieces}
    for _ in range(repeats):
        for label, fn, args, count in pieces:
            t0 = time.thread_time()
            fn(*args)
            times[label].append(count * (time.thread_time() - t0))
    return {label: statistics.median(v) for label, v in times.items()}


def profile(name, layers, hidden, batch, seq, nthreads, vocab=65, repeats=5):
    L, H, T, V = layers, hidden, seq, vocab
    b = batch // nthreads  # streams in one part
    Kg = 4 * H
    rng = np.random.default_rng(0)
    f32 = np.float32
    r = lambda *s: rng.standard_normal(s).astype(f32) * f32(0.1)  # noqa: E731
    m = Model(ModelConfig(cell="lstm", layers=L, hidden=H, vocab_size=V))
    m.init_weights(rng)
    p = m.params
    x = rng.integers(0, V, (T, b)).astype(np.int32)
    y = rng.integers(0, V, (T, b)).astype(np.int32)
    w = alloc_work(m.config, T, b, f32)
    _, dp = m.zeros_like_params()
    h0 = np.zeros((L, b, H), f32)
    c0 = np.zeros((L, b, H), f32)
    dh0, dc0 = np.zeros_like(h0), np.zeros_like(c0)
    n = T * L  # per-step pieces run this many times per window
    N = T * b
    h, R, dG, dh = r(b, H), r(b, Kg), r(b, Kg), r(b, H)
    W = p.Wh[0].copy()
    G = r(b, Kg)
    c_prev, c, tc = r(b, H), r(b, H), r(b, H)
    g = (rng.random((b, Kg)) * 0.8 + 0.1).astype(f32)
    dc = r(b, H)
    A_H, A_K, A_V = r(N, H), r(N, Kg), r(N, V)
    C_K, C_V, C_H = np.empty((N, Kg), f32), np.empty((N, V), f32), np.empty((N, H), f32)
    WxK, WyV = r(H, Kg), r(H, V)
    Psave = r(N, V)
    kernels.pack_weights(p, w, True)
    rec_flops = 2.0 * b * H * Kg * n
    nk, nv = 2.0 * N * H * Kg, 2.0 * N * H * V
    # (label, fn, args, calls per window, flops per window); the fused kernel comes first
    pieces = [
        ("whole", kernels.window_grad, (kernels.LSTM, p, x, y, h0, c0, w, dp, dh0, dc0, N), 1, 0),
        ("pack Wh, Wh^T (all layers)", kernels.pack_weights, (p, w, True), 1, 0),
    ]
    if kernels.packed(w):
        pieces += [
            ("rec fwd, packed (b,H)@(H,4H)", packed_loop, (h, w.Whp[0], R, n), 1, rec_flops),
            ("rec bwd, packed (b,4H)@(4H,H)", packed_loop, (dG, w.WhTp[0], dh, n), 1, rec_flops),
        ]
    pieces += [
        (
            "rec fwd, OpenBLAS" + (" (not used)" if kernels.packed(w) else ""),
            gemm,
            (h, W, R, n),
            1,
            rec_flops,
        ),
        (
            "rec bwd, OpenBLAS" + (" (not used)" if kernels.packed(w) else ""),
            rec_bwd,
            (dG, W, dh, n),
            1,
            rec_flops,
        ),
        ("gates fwd", gates_fwd, (G, c_prev, c, tc, h, n), 1, 0),
        ("gates bwd", gates_bwd, (g, c_prev, tc, dh, dc, dG, n), 1, 0),
        ("decoder (N,H)@(H,V)", gemm, (A_H, WyV, C_V, 1), 1, nv),
        ("dWy += (H,N)@(N,V)", gemm_tn, (A_H, A_V, np.empty((H, V), f32), 1), 1, nv),
        ("dH top (N,V)@(V,H)", gemm, (A_V, np.ascontiguousarray(WyV.T), C_H, 1), 1, nv),
    ]
    # the window's (H, 4H) products: packed where the kernel packs them (gemm.py), with
    # OpenBLAS's figure beside them for comparison
    window = [
        ("input proj (N,H)@(H,4H) x(L-1)", (A_H, WxK, C_K), L - 1),
        ("dW += (H,N)@(N,4H) x(2L-1)", (A_H, A_K, np.zeros((H, Kg), f32)), 2 * L - 1),
        ("dH below (N,4H)@(4H,H) x(L-1)", (A_K, np.ascontiguousarray(WxK.T), C_H), L - 1),
    ]
    for label, (a, bm, c), count in window:
        tn = label.startswith("dW")
        if kernels.packed(w):
            if tn:
                pieces.append((label + ", packed", packed_tn_loop, (a, bm, c, 1), count, nk * count))
            else:
                bp = np.empty(bm.size, f32)
                gemm_mod.pack(bm, bp)
                pieces.append((label + ", packed", packed_loop, (a, bp, c, 1), count, nk * count))
        blas = (label + ", OpenBLAS (not used)") if kernels.packed(w) else label
        pieces.append((blas, gemm_tn if tn else gemm, (a, bm, c, 1), count, nk * count))
    pieces += [
        ("embed", embed_loop, (p, x, np.empty((T, b, Kg), f32), 1), 1, 0),
        ("Wx0 scatter", scatter_loop, (dp.Wx0, x, r(T, b, Kg), 1), 1, 0),
        ("xent (+ a copy)", xent_loop, (A_V.copy(), Psave, y.reshape(-1), 1), 1, 0),
    ]
    pieces = [pc for pc in pieces if pc[3] > 0]
    med = round_robin([pc[:4] for pc in pieces], repeats)
    flops = {pc[0]: pc[4] for pc in pieces}
    whole = med.pop("whole")
    opt = Adam(m.flat)
    g = np.zeros_like(m.flat)
    adam = timeit(opt.step, m.flat.copy(), g, repeats=repeats)
    S = 1024  # the best this core's BLAS does: one large square product
    big_a, big_b, big_c = r(S, S), r(S, S), np.empty((S, S), f32)
    peak = 2.0 * S**3 / timeit(gemm, big_a, big_b, big_c, 1, repeats=3) / 1e9

    print(
        f"\n{name}: {L} layers x {H}, batch {batch} x window {T}, {nthreads} parts of "
        f"{b} streams; one part on one thread, thread CPU time, medians of {repeats} rounds"
    )
    print(f"  fused window kernel (forward + loss + backward): {whole * 1e3:8.2f} ms")
    print(f"  {'piece':52s} {'ms/window':>10s} {'share':>7s} {'GFLOP/s':>8s}")
    total = 0.0
    for label, secs in med.items():
        used = "OpenBLAS" not in label or not kernels.packed(w)
        total += secs if used else 0.0
        fl = flops[label]
        gf = f"{fl / secs / 1e9:8.1f}" if fl else ""
        share = f"{secs / whole:7.1%}" if used else "       "
        print(f"  {label:52s} {secs * 1e3:10.2f} {share} {gf:>8s}")
    print(
        f"  {'rest (loops, copies, norms, sums)':52s} {(whole - total) * 1e3:10.2f} "
        f"{(whole - total) / whole:7.1%}"
    )
    print(f"  Adam over {m.flat.size:,} parameters, once per step: {adam * 1e3:.2f} ms")
    all_flops = 2 * rec_flops + sum(
        fl for label, fl in flops.items() if fl and "rec " not in label and "not used" not in label
    )
    print(
        f"  GEMM flops per window {all_flops / 1e9:.3f} G; whole kernel at "
        f"{all_flops / whole / 1e9:.1f} GFLOP/s; 1024^3 single-thread GEMM: {peak:.1f} GFLOP/s"
    )
    print(
        f"  => at most {b * T / whole * nthreads:,.0f} chars/s with {nthreads} parts in "
        f"parallel (no Adam, no Python)"
    )


def blas_report(repeats):
    """Which BLAS the kernels call (threadpoolctl), and its fp32 GEMM rate on one and on two
    threads: the 1024^3 product (the machine's practical peak) and the shapes a step uses."""
    from threadpoolctl import threadpool_info, threadpool_limits

    threads.single_threaded_blas()  # loads the BLAS Numba calls, if nothing has yet
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            print(
                f"  BLAS: {lib['internal_api']} {lib['version']}, kernel {lib.get('architecture')},"
                f" {os.path.basename(lib['filepath'])}"
            )
    rng = np.random.default_rng(0)
    shapes = [
        (1024, 1024, 1024),
        (25, 128, 512),
        (32, 256, 1024),
        (32, 512, 2048),
        (64, 512, 2048),
        (2500, 128, 512),
        (3200, 512, 2048),
    ]
    print(
        f"  {'SGEMM (m, k, n)':22s} {'1 thread':>9s} {'2 threads':>10s}  GFLOP/s (1 thread: CPU "
        "time; 2: wall, median and best)"
    )
    for m, k, n in shapes:
        a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        c = np.empty((m, n), np.float32)
        flops = 2.0 * m * k * n
        reps = max(1, int(2e8 / flops))
        rates = {}
        for nt in (1, 2):
            with threadpool_limits(nt, user_api="blas"):
                clock = time.thread_time if nt == 1 else time.perf_counter
                runs = [
                    flops * reps / timeit(gemm, a, b, c, reps, repeats=1, clock=clock) / 1e9
                    for _ in range(repeats)
                ]
            rates[nt] = (statistics.median(runs), max(runs))
        print(f"  {str((m, k, n)):22s} {rates[1][0]:9.1f} {rates[2][0]:6.1f} ({rates[2][1]:.0f})")
    threads.single_threaded_blas()


def profile_step(name, layers, hidden, batch, seq, dropout=0.0, vocab=65, repeats=20):
    """A whole training step as the trainer runs it (dropout masks, Model.loss_and_grad over
    the parts on their threads, Adam), wall clock, and each piece outside the fused kernel."""
    from charrnn.engine import model as model_mod

    L, H, B, T, V = layers, hidden, batch, seq, vocab
    rng = np.random.default_rng(0)
    m = Model(ModelConfig("lstm", L, H, V, dropout))
    m.init_weights(rng)
    gflat, grads = m.zeros_like_params()
    opt = Adam(m.flat)
    x = rng.integers(0, V, (T, B)).astype(np.int32)
    y = rng.integers(0, V, (T, B)).astype(np.int32)
    state = list(m.zero_state(B))

    def masks():
        if dropout <= 0:
            return None
        keep = rng.random((L, T, B, H), dtype=np.float32) >= dropout
        return keep.astype(np.float32) * np.float32(1 / (1 - dropout))

    inside = []  # (wall seconds) of each fused-kernel call, timed in the thread that runs it
    fused = kernels.window_grad

    def timed(*a):
        t0 = time.perf_counter()
        out = fused(*a)
        inside.append(time.perf_counter() - t0)
        return out

    def step():
        mk = masks()
        _, (state[0], state[1]) = m.loss_and_grad(x, y, state[0], state[1], grads, mk)
        opt.step(m.flat, gflat)

    kernels.window_grad = timed
    try:
        step()
        walls, slowest = [], []
        for _ in range(repeats):
            inside.clear()
            t0 = time.perf_counter()
            step()
            walls.append(time.perf_counter() - t0)
            slowest.append(max(inside))
    finally:
        kernels.window_grad = fused
    parts = m.parts(B)
    print(
        f"\n{name} whole step: B {B} x T {T}, dropout {dropout}, {len(parts)} parts on "
        f"{threads.num_threads()} threads (wall clock, median of {repeats})"
    )
    whole = statistics.median(walls)
    print(f"  step (masks + loss_and_grad + Adam) {whole * 1e3:9.3f} ms = {B * T / whole:,.0f} chars/s")
    over = statistics.median(np.array(walls) - np.array(slowest))
    print(f"  slowest part's fused kernel         {statistics.median(slowest) * 1e3:9.3f} ms")
    print(f"  step minus slowest kernel           {over * 1e3:9.3f} ms ({over / whole:.1%})")
    print("  pieces outside the kernel, each timed alone on this thread (CPU ms):")
    ws = [m.work(T, s.stop - s.start, dropout > 0, i) for i, s in enumerate(parts)]
    pg = [m._part_grads(i) for i in range(1, len(parts))]

    def merge():
        for gf, g_i in pg:
            for g, d in zip(grads, g_i):
                g += d
            gf[:] = 0

    def copies():
        for s in parts:
            for a in (x, y, *state, *state):  # x, y, h0, c0, dh0, dc0 of each part
                np.ascontiguousarray(a[:, s])

    def handoff():
        for f in [threads.pool().submit(lambda: None) for _ in parts]:
            f.result()

    pieces = [
        ("single_threaded_blas()", threads.single_threaded_blas),
        ("parts(B)", lambda: m.parts(B)),
        ("thread hand-off (submit, result)", handoff),
        ("slice copies per part", copies),
        ("gradient merge (Python)", merge),
        ("state concatenation", lambda: model_mod._join_state(ws)),
        ("grad-norm sum over parts", lambda: np.sqrt(sum(w.gn**2 for w in ws))),
        ("Adam", lambda: opt.step(m.flat, gflat)),
    ]
    if dropout > 0:
        pieces.append(("dropout masks", masks))
    for label, fn in pieces:
        print(f"    {label:34s} {timeit(fn, repeats=repeats) * 1e3:8.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: " + ", ".join(SIZES))
    ap.add_argument("--threads", type=int, default=threads.num_threads())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="blas,kernel,step", help="sections: blas, kernel, step")
    a = ap.parse_args()
    only = a.only.split(",")
    threads.single_threaded_blas()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {cpu_model()}, "
        f"{os.cpu_count()} cpus, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}, "
        f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '-')}"
    )
    if "blas" in only:
        blas_report(a.repeats)
    for name in a.sizes.split(","):
        if "kernel" in only:
            profile(name, **SIZES[name], nthreads=a.threads, repeats=a.repeats)
        if "step" in only:
            profile_step(name, **SIZES[name], repeats=4 * a.repeats)
            profile_step(name, **SIZES[name], dropout=0.2, repeats=4 * a.repeats)


if __name__ == "__main__":
    main()
