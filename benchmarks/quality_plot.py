#!/usr/bin/env python
"""Validation loss against wall-clock minutes: a charrnn run beside PyTorch's reference run.

    python benchmarks/torch_baseline.py quality --corpus ../shared/corpora/tinyshakespeare.txt \\
        --minutes 15 > torch15.json
    python benchmarks/quality_plot.py runs/ts15 torch15.json --png docs/ts15.png

Prints both curves as a table (minutes, val loss) and, with matplotlib installed, draws them.
charrnn's minutes include its evaluations and checkpoint writes; PyTorch's exclude evaluation.
"""

import argparse
import json
import sys
from pathlib import Path


from charrnn.training.plot import read_metrics  # noqa: E402


def curves(run_dir, torch_json):
    """(ours, theirs, their model's name): (minutes, val loss) points of each run."""
    ours = [(r["elapsed"] / 60, r["val_loss"]) for r in read_metrics(run_dir) if "val_loss" in r]
    theirs, name = [], "PyTorch nn.LSTM"
    if torch_json:
        t = json.loads(Path(torch_json).read_text().strip().splitlines()[-1])
        cols = t["curve_columns"]
        theirs = [
            (row[cols.index("train_seconds")] / 60, row[cols.index("val_loss")])
            for row in t["curve"]
            if row[cols.index("train_seconds")] > 0
        ]
        c = t.get("config", {})
        if "layers" in c and "hidden" in c:
            name += f" {c['layers']}x{c['hidden']}"
    return ours, theirs, name


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("torch_json", nargs="?")
    ap.add_argument("--png")
    a = ap.parse_args()
    ours, theirs, their_name = curves(a.run_dir, a.torch_json)
    for name, pts in (("charrnn", ours), ("pytorch", theirs)):
        if pts:
            print(f"{name:8s} " + "  ".join(f"{m:5.1f}m {v:.3f}" for m, v in pts))
    if a.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        ax.plot(*zip(*ours), "o-", label=f"charrnn, defaults (best {min(v for _, v in ours):.4f})")
        if theirs:
            ax.plot(*zip(*theirs), "s--", label=f"{their_name} (best {min(v for _, v in theirs):.4f})")
        ax.axhline(1.42, color="grey", lw=0.8, ls=":", label="1.42, issue 22's 15-minute target")
        ax.set_xlabel("minutes of training (2 CPU cores)")
        ax.set_ylabel("validation loss (nats/char)")
        ax.set_ylim(1.3, 2.6)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title("Tiny Shakespeare, last 10% held out")
        fig.tight_layout()
        fig.savefig(a.png)
        print(f"wrote {a.png}", file=sys.stderr)


if __name__ == "__main__":
    main()
