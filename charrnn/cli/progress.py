"""What `charrnn train` says as it goes, on stderr: a live bar on a terminal, plain lines in a
pipe or a log, a line per evaluation, and the summary at the end."""

import time

from .common import fmt


def _eta(s):
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class TrainingDisplay:
    """A training's progress on stderr. On a terminal, a live Rich bar whose stats follow every event, with a
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
        if e.get("notice"):
            self._print(f"charrnn: {e['notice']}")
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
    how = {"done": "finished", "patience": "stopped early (no improvement)", "interrupted": "interrupted"}[
        status
    ]
    rate = t.chars_seen / t.elapsed if t.elapsed > 0 else 0
    end = f"{rate:,.0f} chars/s overall; checkpoints in {t.run_dir}"
    unknown = _unknown_share(t) if t.best_step and t.sample.length else ""
    full = t.val_full if t.best_step and t.val_full and t.val_full["step"] == t.best_step else None
    if full is not None:  # best.npz has two losses: say which is the headline
        con.print(f"charrnn: {how} at step {t.step} after {t.elapsed:.0f}s; {end}")
        con.print(_headline(t, full) + (f"; {unknown}." if unknown else "."))
        return
    best = (
        "no validation text (best.npz is the last model)"
        if not t.sample.length
        else f"best val {fmt(t.best_val)} at step {t.best_step} (unigram baseline {fmt(t.unigram())})"
        if t.best_step
        else "no evaluation"
    )
    if unknown:
        best += f" ({unknown})"
    con.print(f"charrnn: {how} at step {t.step} after {t.elapsed:.0f}s; {best}; {end}")


def _headline(t, full):
    """best.npz's two losses, said plainly: the final, larger evaluation's is the one to quote;
    every evaluation's (the val column) read only the validation sample, which chose it."""
    s = t.sample
    scored = f"{full['chars']:,} of the {len(t.val_ids) - 1:,}"
    if s.full_is_all and full["chars"] == len(s.full_starts) * s.full_len:
        scored = f"all {full['chars']:,}"
    return (
        f"charrnn: the loss to quote is {fmt(full['loss'])} nats/char: best.npz (step {t.best_step}) "
        f"on {scored} validation characters. The val {fmt(t.best_val)} at step {t.best_step} is the "
        f"same model on the {s.chars:,}-character validation sample every evaluation during "
        "training reads (quicker, and the best was chosen on it), so the two differ; the "
        f"unigram baseline (the text's character frequencies) scores {fmt(t.unigram())} on it"
    )


def _unknown_share(t):
    """A note when over 1% of the validation text is a --max-vocab model's unknown symbol."""
    import numpy as np

    unk = t.model.vocab.unk_id
    if unk < 0 or not len(t.val_ids):
        return ""
    share = np.count_nonzero(np.asarray(t.val_ids) == unk) / len(t.val_ids)
    return f"{100 * share:.0f}% of the validation text is the unknown symbol" if share > 0.01 else ""


class Compiling:
    """What a command says while warm.prepare compiles its kernels (the first run after an
    install): on a terminal a Rich bar over the groups, in a pipe a line per group, nothing with
    quiet or when every kernel was in Numba's cache. `what` ends the first line: how the wait
    counts (a training's --minutes count it). con: a Rich console, or None to make one only
    when there is something to say (importing Rich is a tenth of a warm sample's start-up)."""

    def __init__(self, con=None, quiet=False, what=""):
        self._con, self.quiet, self.what = con, quiet, what
        self.bar = None
        self.t0 = time.monotonic()

    @property
    def con(self):
        if self._con is None:
            from .common import console

            self._con = console()
        return self._con

    def __call__(self, r):
        if self.quiet:
            return
        if r.name is None:
            self.con.print(
                f"charrnn: compiling kernels, first run only ({r.total} group{'s'[: r.total != 1]}"
                f"{', on two cores' if r.processes > 1 else ''}; cached for next time){self.what}"
            )
            if self.con.is_terminal:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
                from rich.progress import TimeElapsedColumn

                self.bar = Progress(
                    TextColumn("compiling kernels"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[name]}"),
                    TimeElapsedColumn(),
                    console=self.con,
                    transient=True,
                )
                self.bar.start()
                self.task = self.bar.add_task("compiling", total=r.total, name="")
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=r.done, name=r.name)
        else:
            self.con.print(
                f"charrnn: compiling kernels {r.done}/{r.total}: {r.name} ready "
                f"({time.monotonic() - self.t0:.0f}s)"
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


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
