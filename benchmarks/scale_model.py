"""How far data-parallel training over MPI can pay: the measured step time of a model on this
machine against a ring allreduce of its gradient over Ethernet, on paper.

    python benchmarks/scale_model.py                 # measures 2x128, 2x512 and 3x1024 here
    python benchmarks/scale_model.py --steps 5

A ring allreduce of S bytes over N ranks sends 2 (N-1)/N * S bytes from every rank and takes
2 (N-1) latency-bound hops: t(N) = 2 (N-1)/N * S / bandwidth + 2 (N-1) * latency. Each rank is
assumed to be a machine like this one (its step time measured here on both cores), and the
network to deliver 90% of its line rate with a per-hop latency of 30 us (10 Gbit/s) or 20 us
(25 Gbit/s): typical TCP figures, not measured here (this machine has no second host).

Two ways to grow:
- strong scaling: the global batch B stays (as `--batch` does under mpiexec); a rank computes
  B/N streams, so compute shrinks as 1/N while the allreduce does not; B/N < 1 is impossible;
- weak scaling: every rank keeps B streams (a global batch of N*B, with a larger learning rate);
  compute per step stays, and the allreduce is the only cost.
Efficiency = ideal time / (compute + allreduce), the communication not overlapped with compute.
"""

import argparse
import os
import platform
import time

import numpy as np


from charrnn.engine.model import Model, ModelConfig  # noqa: E402
from charrnn.engine.optim import Adam  # noqa: E402

MODELS = [("2x128", 2, 128, 50, 50), ("2x512", 2, 512, 64, 100), ("3x1024", 3, 1024, 64, 100)]
NETWORKS = [("10 Gbit/s", 10e9 / 8 * 0.9, 30e-6), ("25 Gbit/s", 25e9 / 8 * 0.9, 20e-6)]
RANKS = [2, 8, 32, 128]
V = 65


def step_seconds(layers, hidden, B, T, steps):
    """Median wall time of a training step (forward, backward, Adam) on this machine."""
    m = Model(ModelConfig("lstm", layers, hidden, V))
    m.init_weights(np.random.default_rng(0))
    gflat, grads = m.zeros_like_params()
    opt = Adam(m.flat)
    rng = np.random.default_rng(1)
    times = []
    for i in range(steps + 1):
        x = rng.integers(0, V, (T, B)).astype(np.int32)
        y = rng.integers(0, V, (T, B)).astype(np.int32)
        t0 = time.perf_counter()
        m.loss_and_grad(x, y, *m.zero_state(B), grads)
        opt.step(m.flat, gflat)
        if i:  # the first step compiles or loads kernels
            times.append(time.perf_counter() - t0)
    return float(np.median(times)), m.flat.nbytes


def allreduce(nbytes, n, bandwidth, latency):
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per model (median)")
    args = ap.parse_args()
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
        platform.processor(),
    )
    print(
        f"# {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; OPENBLAS_CORETYPE="
        f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
    )
    print(
        "| model | batch | gradient (MB) | step here (s) | network | allreduce at N = "
        + ", ".join(map(str, RANKS))
        + " (ms) | strong scaling eff. | weak scaling eff. |"
    )
    print("| --- | --- | ---: | ---: | --- | --- | --- | --- |")
    for name, L, H, B, T in MODELS:
        t_step, nbytes = step_seconds(L, H, B, T, args.steps)
        for net, bw, lat in NETWORKS:
            ar = [allreduce(nbytes, n, bw, lat) for n in RANKS]
            strong = [("-" if n > B else f"{(t_step / n) / (t_step / n + a):.0%}") for n, a in zip(RANKS, ar)]
            weak = [f"{t_step / (t_step + a):.0%}" for a in ar]
            print(
                f"| {name} | B{B} T{T} | {nbytes / 1e6:.1f} | {t_step:.3f} | {net} | "
                + " / ".join(f"{1e3 * a:.1f}" for a in ar)
                + " | "
                + " / ".join(strong)
                + " | "
                + " / ".join(weak)
                + " |"
            )


if __name__ == "__main__":
    main()
