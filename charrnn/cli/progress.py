"""What `charrnn train` says as it goes, on stderr: a live bar on a terminal, plain lines in a
pipe or a log, a line per evaluation, and the summary at the end."""

import time

from .common import fmt


def _eta(s):
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Progress on stderr. On a terminal, a live Rich bar whose stats follow every event, with a
    line per evaluation above it; in a pipe or a log, plain lines: one after the first step,
    then at most every PIPE_SECONDS, and one per evaluation."""

    PIPE_SECONDS = 15.0

    def __init__(self, con, trainer, quiet):
        self.con, self.trainer, self.quiet = con, trainer, quiet
        self.live = not quiet and con.is_terminal
        self.printed = None  # time.monotonic() of the last line printed

    def __enter__(self):
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=self.con,
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("training", total=1.0, stats="", completed=self.trainer.progress())
        return self

    def update(self, e):
        if self.quiet:
            return
        kind = e.get("kind", "eval")
        if kind == "full":
            self._print(
                f"best.npz (step {e['step']}){_weights(e)} on "
                f"{'all ' if e.get('all') else ''}"
                f"{e['val_chars_full']:,} validation characters: "
                f"{fmt(e['val_loss_full'])} nats/char"
            )
            return
        line = _progress_line(e)
        if self.live:
            self.bar.update(self.task, completed=self.trainer.progress(), stats=line)
            if kind == "eval":
                self.bar.console.print(line + _grad_norms(e))
        elif kind == "eval" or self.printed is None or time.monotonic() - self.printed >= self.PIPE_SECONDS:
            self._print(line + _grad_norms(e))

    def _print(self, line):
        (self.bar.console if self.live else self.con).print(line)
        self.printed = time.monotonic()

    def __exit__(self, *exc):
        if self.live:
            self.bar.stop()


def _progress_line(e):
    """step, epoch, training loss, the validation loss at an evaluation (* a new best), speed
    and time left; training-only lines leave the validation column blank."""
    val = (
        f"val {fmt(e['val_loss'])}{' *' if e.get('best') else '  '}{_weights(e)}"
        if "val_loss" in e
        else " " * 12
    )
    return (
        f"step {e['step']:>6}  epoch {e['epoch']:7.3f}  train {fmt(e['train_loss'])}  "
        f"{val}  {e['chars_per_sec']:,.0f} chars/s  left {_eta(e['eta'])}"
    )


def _weights(e):
    """ " (averaged weights)" after a score of --ema's average (evaluations, best.npz)."""
    return " (averaged weights)" if e.get("weights") == "averaged" else ""


def _grad_norms(e):
    if "grad_norms" not in e:
        return ""
    g = e["grad_norms"]
    last = g[-1] or 1.0
    picks = sorted({len(g) - 1 - k for k in (0, 1, 2, 5, 10, 20, 50, 100) if k < len(g)}, reverse=True)
    return "\n  |dL/dh_t| / |dL/dh_T-1|: " + "  ".join(
        f"t=T-{len(g) - 1 - t}:{g[t] / last:.3g}" for t in picks
    )


def summary(con, t, status, quiet):
    if quiet:
        return
    import numpy as np

    how = {"done": "finished", "patience": "stopped early (no improvement)", "interrupted": "interrupted"}[
        status
    ]
    best = (
        "no validation text (best.npz is the last model)"
        if not t.sample.length
        else f"best val {fmt(t.best_val)} at step {t.best_step} (unigram baseline {fmt(t.unigram())})"
        if t.best_step
        else "no evaluation"
    )
    unk = t.model.vocab.unk_id
    if t.best_step and t.sample.length and unk >= 0:
        share = np.count_nonzero(np.asarray(t.val_ids) == unk) / len(t.val_ids)
        if share > 0.01:
            best += f" ({100 * share:.0f}% of the validation text is the unknown symbol)"
    rate = t.chars_seen / t.elapsed if t.elapsed > 0 else 0
    con.print(
        f"charrnn: {how} at step {t.step} after {t.elapsed:.0f}s; {best}; "
        f"{rate:,.0f} chars/s overall; checkpoints in {t.run_dir}"
    )


def no_better_than_unigram(con, t):
    """A warning line, whatever --quiet says, when the best model scores no better on the
    validation sample than the training text's own character frequencies: it has learned
    nothing from what comes before a character. The run still exits 0 (see docs/usage.md)."""
    import math

    base = t.unigram()
    if not t.best_step or not math.isfinite(t.best_val) or not math.isfinite(base) or t.best_val < base:
        return
    con.print(
        f"charrnn: warning: the best model scores {fmt(t.best_val)} nats/char on the validation "
        f"sample, no better than the unigram baseline {fmt(base)} (the training text's character "
        "frequencies, add-one smoothed): it has not learned to predict a character from the "
        f"ones before it. Train it longer (charrnn train --resume {t.run_dir} with a larger "
        "budget) or make it smaller (--max-vocab, --hidden)"
    )
