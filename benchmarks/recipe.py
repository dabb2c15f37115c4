"""Recipes for the 15-minute Tiny Shakespeare run at equal work, on the whole corpus (issue 22).

    python benchmarks/recipe.py --corpus ../shared/corpora/tinyshakespeare.txt --steps 1266
    python benchmarks/recipe.py --corpus ... --steps 1266 --only base,d3 --parallel 2

The configurations name their batch (the default is 16 since 2026-12-05; "base" is the old 64).

--steps is what the budget buys the default 2 x 512 on the machine in question: the last step of
`charrnn train tinyshakespeare --minutes 15` there (1,266 on a quiet 2-core AMD EPYC Zen 4, 1,576
on the Intel kind of issue 22). Each configuration trains with the standard split (the last tenth
is validation) for the same time: a larger model gets fewer steps, in proportion to its
multiply-adds per character (charrnn.training.sizing.work_per_char), and a smaller batch more, by
its measured rate (BATCH_RATE), so that the table compares what the same minutes buy.
Steps, unlike minutes, give the same run whatever else the machine is doing, so --parallel N
runs N configurations at once, one core each, and the results are those of a quiet machine (only
the wall time is longer). Then `charrnn eval --exact` scores each run's best.npz on the whole
validation tenth. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

from charrnn.training.sizing import work_per_char

from bench import cpu_kind  # noqa: E402  (this directory's)
from regularisers import exact_score  # noqa: E402

# fmt: off
CONFIGS = {  # name: (layers, hidden, batch, options beyond them)
    "base":    (2, 512, 64, ["--dropout", "0.2"]),
    "d1":      (2, 512, 64, ["--dropout", "0.1"]),
    "d3":      (2, 512, 64, ["--dropout", "0.3"]),
    "wdrop":   (2, 512, 64, ["--dropout", "0.2", "--weight-drop", "0.15"]),
    "h640d3":  (2, 640, 64, ["--dropout", "0.3"]),
    "b32":     (2, 512, 32, ["--dropout", "0.2"]),
    "b32lr2":  (2, 512, 32, ["--dropout", "0.2", "--lr", "0.002"]),
    "b16":     (2, 512, 16, ["--dropout", "0.2"]),
    "b16d3":   (2, 512, 16, ["--dropout", "0.3"]),
    "b16h640": (2, 640, 16, ["--dropout", "0.3"]),
    "ema":     (2, 512, 64, ["--dropout", "0.2", "--ema", "0.999"]),
}
# Batches of 32 and 16 train the 2 x 512 at 0.92 times the characters a second of 64 (2-core AMD
# EPYC Zen 4, 2026-12-05, short runs alone); they get that share of the characters.
BATCH_RATE = {64: 1.0, 32: 0.92, 16: 0.92}
# fmt: on


def validation_tenth(corpus, where):
    text = Path(corpus).read_text(encoding="utf-8")
    val = text[int(len(text) * (1 - Fraction("0.1"))) :]
    path = where / "ts_val.txt"
    path.write_text(val, encoding="utf-8")
    return path


def steps_for(layers, hidden, batch, base_steps):
    """Steps of equal time to base_steps of the default 2 x 512 at batch 64."""
    work = work_per_char("lstm", 2, 512, 65) / work_per_char("lstm", layers, hidden, 65)
    return round(base_steps * work * 64 / batch * BATCH_RATE[batch])


def run(name, corpus, val, where, base_steps, threads, seed):
    layers, hidden, batch, extra = CONFIGS[name]
    steps = steps_for(layers, hidden, batch, base_steps)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["CHARRNN_THREADS"] = str(threads)
    out = where / name
    cmd = [sys.executable, "-m", "charrnn"]
    train = [
        *cmd,
        "train",
        str(corpus),
        "--layers",
        str(layers),
        "--hidden",
        str(hidden),
        "--batch",
        str(batch),
        "--steps",
        str(steps),
        "--seed",
        str(seed),
        "-o",
        str(out),
        "-q",
        *extra,
    ]
    t0 = time.time()
    subprocess.run(train, env=env, check=True)
    secs = time.time() - t0
    nats = exact_score(cmd, out / "best.npz", val, env)
    info = subprocess.run(
        [*cmd, "info", str(out / "best.npz"), "--json"], env=env, check=True, capture_output=True, text=True
    ).stdout
    best_step = json.loads(info).get("step")
    return name, steps, nats, best_step, secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--steps", type=int, required=True, help="the default 2 x 512's steps in the budget")
    ap.add_argument("--only", help="comma-separated names among " + ", ".join(CONFIGS))
    ap.add_argument("--parallel", type=int, default=1, help="configurations at once, one core each")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(CONFIGS)
    threads = 1 if args.parallel > 1 else os.cpu_count()
    print(
        f"# {cpu_kind() or platform.processor()}, {os.cpu_count()} cores; Tiny Shakespeare, the "
        f"last tenth as validation; the time of {args.steps} steps of the 2 x 512 at batch 64, "
        f"window 100, seed {args.seed}; "
        f"{args.parallel} at once"
    )
    with tempfile.TemporaryDirectory() as d:
        where = Path(d)
        val = validation_tenth(args.corpus, where)
        print(
            "| configuration | model and options | steps | best at step | val (exact, nats/char) | wall s |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        with ThreadPoolExecutor(args.parallel) as pool:
            jobs = [
                pool.submit(run, n, args.corpus, val, where, args.steps, threads, args.seed) for n in names
            ]
            for job in jobs:
                name, steps, nats, best, secs = job.result()
                layers, hidden, batch, extra = CONFIGS[name]
                print(
                    f"| {name} | {layers} x {hidden}, batch {batch} `{' '.join(extra)}` | {steps} | {best} | "
                    f"{nats:.4f} | {secs:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
