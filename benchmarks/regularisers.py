"""Each regulariser's effect at equal steps, on Tiny Shakespeare's validation tenth, in the
many-epoch regime the regularisers are for (issue 22).

    python benchmarks/regularisers.py --corpus ../shared/corpora/tinyshakespeare.txt
    python benchmarks/regularisers.py --corpus ... --steps 240 --only base,wdrop
    python benchmarks/regularisers.py --corpus ... --quarter   # 27,885 training characters

A 15-minute run of the default 2 x 512 reads Tiny Shakespeare 7-10 times. That cannot be done in
a few minutes on a shared 2-core machine, so the runs here read a smaller training text many
times over: the corpus's first 111,540 characters (a tenth) as training text, and its last tenth,
the standard validation split, as validation (`--val-frac 0.5` of the two joined). At 240 steps of
64 x 100 a 2 x 256 LSTM reads that training text 14 times; with --quarter the training text is
its first 27,885 characters (`--val-frac 0.8`), read 55 times, and the model over-fits. Each
configuration trains for the same number of steps (not the same minutes: the machine is shared,
so wall time says little), then
`charrnn eval --exact` scores best.npz on the whole validation tenth. Runs go one at a time,
under `nice -n 10`, with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

CONFIGS = {  # name: options added to the base command
    "base": ["--dropout", "0.1"],
    "variational": ["--dropout", "0.1", "--dropout-mode", "variational"],
    "wdrop": ["--dropout", "0.1", "--weight-drop", "0.25"],
    "edrop": ["--dropout", "0.1", "--embed-drop", "0.1"],
    "ema": ["--dropout", "0.1", "--ema", "0.999"],
    "all": [
        "--dropout",
        "0.1",
        "--dropout-mode",
        "variational",
        "--weight-drop",
        "0.25",
        "--embed-drop",
        "0.1",
        "--ema",
        "0.999",
    ],
}


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def proxy_corpus(corpus, where, quarter=False):
    """(the training text's start + the validation tenth) joined, so that --val-frac 0.5 (0.8
    with quarter) splits off exactly the standard validation text; and the validation text
    alone, for eval."""
    text = Path(corpus).read_text(encoding="utf-8")
    n_train = int(len(text) * (1 - Fraction("0.1")))
    val = text[n_train:]
    both, alone = where / "ts_small.txt", where / "ts_val.txt"
    both.write_text(text[: len(val) // (4 if quarter else 1)] + val, encoding="utf-8")
    alone.write_text(val, encoding="utf-8")
    return both, alone


def run(name, extra, both, alone, where, steps, val_frac):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = where / name
    train = [
        "nice",
        "-n",
        "10",
        sys.executable,
        "-m",
        "charrnn",
        "train",
        str(both),
        "--val-frac",
        val_frac,
        "--hidden",
        "256",
        "--batch",
        "64",  # the table in docs/choosing-defaults.md was measured at 64, the default then
        "--layers",
        "2",
        "--steps",
        str(steps),
        "--eval-every",
        str(max(1, steps // 6)),
        "--eval-chars",
        "30000",
        "--seed",
        "1",
        "-o",
        str(out),
        "-q",
        *extra,
    ]
    t0 = time.time()
    subprocess.run(train, env=env, check=True)
    secs = time.time() - t0
    return exact_score(
        ["nice", "-n", "10", sys.executable, "-m", "charrnn"], out / "best.npz", alone, env
    ), secs


def exact_score(charrnn, checkpoint, text, env):
    """`charrnn eval --exact` of checkpoint on text, in nats/char; charrnn: the command's start."""
    out = subprocess.run(
        [*charrnn, "eval", "--exact", "-c", str(checkpoint), str(text), "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)["nats_per_char"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument(
        "--quarter",
        action="store_true",
        help="train on a quarter as much text (27,885 characters): over-fitting",
    )
    ap.add_argument("--only", help="comma-separated names among " + ", ".join(CONFIGS))
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(CONFIGS)
    print(
        f"# {cpu_model()}, {os.cpu_count()} cores; 2 x 256 LSTM, batch 64 x 100, "
        f"{args.steps} steps, seed 1, training text "
        f"{'a quarter of ' if args.quarter else ''}Tiny Shakespeare's first tenth"
    )
    with tempfile.TemporaryDirectory() as d:
        where = Path(d)
        both, alone = proxy_corpus(args.corpus, where, args.quarter)
        print("| configuration | options | val (exact, nats/char) | wall s |")
        print("| --- | --- | ---: | ---: |")
        for name in names:
            nats, secs = run(
                name, CONFIGS[name], both, alone, where, args.steps, "0.8" if args.quarter else "0.5"
            )
            print(f"| {name} | `{' '.join(CONFIGS[name])}` | {nats:.4f} | {secs:.0f} |", flush=True)


if __name__ == "__main__":
    main()
