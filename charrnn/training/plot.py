"""Learning curves from a run's metrics: a text chart for the terminal, or a PNG through
matplotlib when it is installed (`pip install 'charrnn[plot]'`)."""

import json
import math
from pathlib import Path

from ..errors import CharrnnError, install_hint


def read_metrics(run_dir):
    """The rows of a run's metrics.jsonl, oldest first: evaluations, training-loss rows and
    the final, larger evaluation (see Trainer.run)."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise CharrnnError(f"{run_dir} has no metrics.jsonl; is it a charrnn run directory?")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise CharrnnError(f"{path}:{n} is not valid JSON") from None
    if not rows:
        raise CharrnnError(f"{path} holds no rows yet")
    return rows


def _finite(v):
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def curves(rows, x="elapsed"):
    """{"train": [(x, loss)], "val": [...], "full": [...]} from metrics rows.

    Training loss comes from the "train" rows written every few seconds, or, in a metrics file
    from before they existed, from the evaluations; validation loss from the evaluations
    (rows without a kind are evaluations); "full" is the final, larger evaluation of the best
    model, at the best model's position."""
    kind = lambda r: r.get("kind", "eval")
    has_train_rows = any(kind(r) == "train" for r in rows)
    picks = {
        "train": ("train" if has_train_rows else "eval", "train_loss"),
        "val": ("eval", "val_loss"),
        "full": ("full", "val_loss_full"),
    }
    return {
        name: [(r[x], r[key]) for r in rows if kind(r) == k and _finite(r.get(key)) and _finite(r.get(x))]
        for name, (k, key) in picks.items()
    }


MARKS = (("train", "·"), ("val", "*"), ("full", "o"))


def text_chart(rows, x="elapsed", width=72, height=18):
    """Train (·), validation (*) and the best model's larger evaluation (o) against x
    ("elapsed" seconds or "chars"), as lines."""
    pts = curves(rows, x)
    allp = [p for name, _ in MARKS for p in pts[name]]
    if not allp:
        return ["(no finite losses to plot)"]
    x0, x1 = min(p[0] for p in allp), max(p[0] for p in allp)
    y0, y1 = min(p[1] for p in allp), max(p[1] for p in allp)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-3)
    grid = [[" "] * width for _ in range(height)]
    for name, mark in MARKS:
        for px, py in pts[name]:
            col = round((px - x0) / (x1 - x0) * (width - 1))
            row = round((y1 - py) / (y1 - y0) * (height - 1))
            grid[row][col] = mark
    lines = []
    for i, row in enumerate(grid):
        label = y1 - (y1 - y0) * i / (height - 1)
        lines.append(f"{label:7.3f} |" + "".join(row))
    unit = "s" if x == "elapsed" else " chars"
    lines.append(" " * 8 + "+" + "-" * width)
    lines.append(" " * 9 + f"{x0:,.0f}{unit}".ljust(width - 12) + f"{x1:,.0f}{unit}")
    legend = "· train loss   * validation loss"
    if pts["full"]:
        legend += "   o best model, larger evaluation"
    lines.append(" " * 9 + legend + "   (nats/char)")
    return lines


def png(rows, path):
    """Write loss against time and against characters seen side by side; needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CharrnnError(f"writing a PNG needs matplotlib: {install_hint('plot')}") from None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = (
        ("train", "-", "train loss"),
        ("val", "o-", "validation loss"),
        ("full", "D", "best model, larger evaluation"),
    )
    for ax, x, label in ((axes[0], "elapsed", "training time (s)"), (axes[1], "chars", "characters seen")):
        pts = curves(rows, x)
        for name, style, legend in styles:
            if pts[name]:
                ax.plot(*zip(*pts[name]), style, label=legend, markersize=6 if name == "full" else 3)
        ax.set_xlabel(label)
        ax.set_ylabel("nats / character")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
