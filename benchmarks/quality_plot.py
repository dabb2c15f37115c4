#!/usr/bin/env python
"""Validation loss against wall-clock minutes: a charrnn run beside PyTorch's reference run.

    python benchmarks/torch_baseline.py quality --corpus ../shared/corpora/tinyshakespeare.txt \\
        --minutes 15 > torch15.json
    python benchmarks/quality_plot.py runs/ts15 torch15.json --png docs/ts15.png

Prints the curves as a table (minutes, val loss) and, with matplotlib installed, draws them;
several run directories (e.g. seeds) are drawn together (--label names them).
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
    ap.add_argument("paths", nargs="+", help="charrnn run directories, and PyTorch's JSON (a .json)")
    ap.add_argument("--label", action="append", help="a run's name in the legend, in order")
    ap.add_argument("--target", type=float, default=1.38, help="a horizontal line: the target")
    ap.add_argument("--ylim", type=float, nargs=2, default=(1.3, 2.6), metavar=("LOW", "HIGH"))
    ap.add_argument("--png")
    a = ap.parse_args()
    runs = [p for p in a.paths if not p.endswith(".json")]
    torch_json = next((p for p in a.paths if p.endswith(".json")), None)
    labels = (a.label or []) + [f"charrnn, defaults ({Path(r).name})" for r in runs[len(a.label or []) :]]
    series = []
    for i, run in enumerate(runs):
        ours, theirs, their_name = curves(run, torch_json if i == 0 else None)
        series.append((labels[i], ours, "o-"))
        if theirs:
            series.append((their_name, theirs, "s--"))
    for name, pts, _ in series:
        print(f"{name}: " + "  ".join(f"{m:5.1f}m {v:.3f}" for m, v in pts))
    if a.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for name, pts, style in series:
            ax.plot(*zip(*pts), style, label=f"{name} (best {min(v for _, v in pts):.4f})")
        ax.axhline(a.target, color="grey", lw=0.8, ls=":", label=f"{a.target:g}, the 15-minute target")
        ax.set_xlabel("minutes of training (2 CPU cores)")
        ax.set_ylabel("validation loss (nats/char)")
        ax.set_ylim(*a.ylim)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title("Tiny Shakespeare, last 10% held out")
        fig.tight_layout()
        fig.savefig(a.png)
        print(f"wrote {a.png}", file=sys.stderr)


if __name__ == "__main__":
    main()
