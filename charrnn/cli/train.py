"""charrnn train: a run from its options, with progress on stderr."""

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import DEFAULT_EPOCHS, MODEL_FIELDS, SMALL_MODEL_LR, TRAIN_FIELDS, ModelConfig, TrainConfig
from ..errors import CharrnnError
from .common import (
    EXIT_INTERRUPTED,
    DataDirOpt,
    EncodingOpt,
    ErrorsOpt,
    Opt,
    QuietOpt,
    console,
    stop_flag,
    threads_opt,
    use_threads,
    user_errors,
)
from .progress import Compiling, TrainingDisplay, no_better_than_unigram, summary


def run_opt(help, default=None, *decls, **kw):
    """An option of the run's configuration: None unless given, so that config.resolve applies
    the precedence rules (a given option, the --resume run's or --init-from model's, the budget
    preset, then config.py's default, written there once and shown here)."""
    if default is not None:
        help = f"{help}  [default: {default}]"
    return Opt(*decls, help=help, show_default=False, **kw)


@user_errors
def train(
    ctx: typer.Context,
    corpus: Annotated[
        Optional[str],
        typer.Argument(
            metavar="CORPUS",
            help="Training text: a file, a directory of text files, '-' for stdin, or a corpus name "
            "such as 'tinyshakespeare'. Default: this Python's standard library source.",
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        Opt(
            "--out",
            "-o",
            help="Run directory for checkpoints and "
            "metrics. Default: <corpus>-<date>-<time> under "
            "$CHARRNN_RUNS, else under ./runs.",
        ),
    ] = None,
    cell: Annotated[
        Optional[str],
        run_opt(
            "Recurrent cell: lstm, gru, rnn or lnlstm (an LSTM with layer normalisation).", ModelConfig.cell
        ),
    ] = None,
    layers: Annotated[
        Optional[int], run_opt("Number of stacked recurrent layers.", ModelConfig.layers)
    ] = None,
    hidden: Annotated[
        Optional[int],
        run_opt(
            "Units per layer. Default: sized to the budget, 640 for --minutes 15 or more, 512 for 10 "
            "or more, 384 for 5 or more, otherwise 256."
        ),
    ] = None,
    dropout: Annotated[
        Optional[float],
        run_opt(
            "Dropout between layers and before the decoder. Default: 0.3 with the 640 preset, 0.2 "
            "with 512, 0.1 with 384, otherwise 0."
        ),
    ] = None,
    batch: Annotated[
        Optional[int], run_opt("Parallel streams per step (batch size).", TrainConfig.batch)
    ] = None,
    seq: Annotated[
        Optional[int], run_opt("Characters per step and stream (BPTT window).", TrainConfig.seq)
    ] = None,
    lr: Annotated[
        Optional[float],
        run_opt(
            f"Adam learning rate (peak). Default: {SMALL_MODEL_LR[1]:g} for a new model of up to "
            f"{SMALL_MODEL_LR[0]} hidden units, else {TrainConfig.lr:g}."
        ),
    ] = None,
    grad_clip: Annotated[
        Optional[float], run_opt("Clip the global gradient norm (0: off).", TrainConfig.grad_clip)
    ] = None,
    schedule: Annotated[
        Optional[str],
        run_opt(
            "Learning-rate schedule: constant or cosine (decays over the --steps/--minutes/--epochs budget). "
            "With --resume, constant continues a cosine run at the rate where it stands.",
            TrainConfig.schedule,
        ),
    ] = None,
    warmup: Annotated[
        Optional[int], run_opt("Linear learning-rate warm-up steps.", TrainConfig.warmup)
    ] = None,
    lr_decay: Annotated[
        Optional[float],
        run_opt(
            "constant schedule: multiply lr by this each epoch after --lr-decay-after epochs.",
            TrainConfig.lr_decay,
        ),
    ] = None,
    lr_decay_after: Annotated[
        Optional[int], run_opt("Epochs before --lr-decay applies.", TrainConfig.lr_decay_after)
    ] = None,
    weight_decay: Annotated[
        Optional[float],
        run_opt("Decoupled weight decay (AdamW's). Default: 0.1 with the 640 preset, otherwise 0."),
    ] = None,
    steps: Annotated[
        Optional[int], run_opt("Stop after this many optimizer steps (0: no limit).", TrainConfig.steps)
    ] = None,
    minutes: Annotated[
        Optional[float], run_opt("Stop after this much training time (0: no limit).", TrainConfig.minutes)
    ] = None,
    epochs: Annotated[
        Optional[float],
        run_opt(
            "Stop after this many passes over the text (0: no limit; 10 when no budget is given).",
            TrainConfig.epochs,
        ),
    ] = None,
    val_frac: Annotated[
        Optional[float],
        run_opt("Fraction at the end of the text held out for validation.", TrainConfig.val_frac),
    ] = None,
    eval_every: Annotated[
        Optional[int],
        run_opt(
            "Steps between evaluations and checkpoints. Default: 1.28M training characters' "
            "worth at the run's --batch x --seq (800 steps of 16 x 100).",
        ),
    ] = None,
    eval_chars: Annotated[
        Optional[int],
        run_opt(
            "Validation characters read per evaluation, ten times as many at the last one (0: all).",
            TrainConfig.eval_chars,
        ),
    ] = None,
    keep: Annotated[
        Optional[int], run_opt("Also keep the last N step-stamped checkpoints.", TrainConfig.keep)
    ] = None,
    patience: Annotated[
        Optional[int],
        run_opt("Stop after N evaluations without improvement (0: never).", TrainConfig.patience),
    ] = None,
    seed: Annotated[Optional[int], run_opt("Random seed.", TrainConfig.seed)] = None,
    state_reset: Annotated[
        Optional[int],
        run_opt(
            "Reset each stream's carried state at random, on average every this many characters "
            "(0: never), so the model can start from a zero state as sampling does.",
            TrainConfig.state_reset,
        ),
    ] = None,
    dropout_mode: Annotated[
        Optional[str],
        run_opt(
            "standard (a fresh dropout mask at every step) or variational (one mask per window and "
            "stream, the same at all its steps).",
            TrainConfig.dropout_mode,
        ),
    ] = None,
    weight_drop: Annotated[
        Optional[float],
        run_opt(
            "DropConnect on the recurrent weights: each dropped with this probability, one mask "
            "per window (AWD-LSTM). Default: 0.1 with the 640 preset, otherwise 0.",
        ),
    ] = None,
    embed_drop: Annotated[
        Optional[float],
        run_opt(
            "Drop whole characters' first-layer input rows (their embedding) with this "
            "probability, per window.",
            TrainConfig.embed_drop,
        ),
    ] = None,
    ema: Annotated[
        Optional[float],
        run_opt(
            "Evaluate and save an exponential moving average of the weights with this decay, e.g. "
            "0.999 (0: off); best.npz then holds the averaged weights.",
            TrainConfig.ema,
        ),
    ] = None,
    precision: Annotated[
        Optional[str],
        run_opt(
            "The products' inputs: fp32 (exact), bf16 (rounded to bf16, float32 sums; the "
            "weights, Adam and the gates stay float32), or auto: bf16 where the CPU has AMX "
            "tiles (1.5-2.6x fp32's rate there), fp32 elsewhere.",
            TrainConfig.precision,
        ),
    ] = None,
    log_grad_norms: Annotated[
        Optional[bool],
        run_opt(
            "At each evaluation, show how the gradient |dL/dh_t| of the first layer changes across "
            "the window (vanishing or exploding).",
            None,
            "--log-grad-norms/--no-log-grad-norms",
        ),
    ] = None,
    auto_size: Annotated[
        bool,
        Opt(
            "--auto-size/--no-auto-size",
            help="With --minutes and no --hidden: choose the size, dropout, weight drop and rate "
            "from the characters the budget buys, from a rate measured for a few seconds here and "
            "the corpus size (said in one line). --no-auto-size takes the fixed preset of the "
            "minutes.",
        ),
    ] = True,
    resume: Annotated[
        Optional[Path], Opt(help="Continue the run in this directory exactly where it stopped.")
    ] = None,
    init_from: Annotated[
        Optional[Path], Opt(help="Start from a trained checkpoint's weights (fine-tuning).")
    ] = None,
    byte_level: Annotated[
        bool, Opt("--byte-level", "--bytes", help="Model raw bytes instead of Unicode characters.")
    ] = False,
    max_vocab: Annotated[
        Optional[int], Opt(help="Keep the N most frequent characters; the rest become one unknown symbol.")
    ] = None,
    encoding: EncodingOpt = None,
    errors: ErrorsOpt = "strict",
    glob: Annotated[
        Optional[str],
        Opt(
            help="With a directory CORPUS: only files whose name matches this pattern, e.g. '*.py'; "
            "with a /, whose path under it matches, e.g. 'api/*.md'."
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    float64: Annotated[bool, Opt("--float64", help="Train in float64 (slow; for checks).")] = False,
    threads: threads_opt("Cores to train on. Default: all this process may use.") = None,
    force: Annotated[
        bool,
        Opt(
            help="Start over in a run directory that holds a run (one "
            "that a live training holds is always refused)."
        ),
    ] = False,
    quiet: QuietOpt = False,
):
    """Train a model on a text and write checkpoints to the run directory."""
    started = time.perf_counter()
    import numpy as np
    from ..training import dist, run
    from ..training.runs import default_run_dir

    use_threads(threads)
    world = dist.world()  # under mpiexec: one of several processes training one model
    options = {k: v for k, v in ctx.params.items() if k in MODEL_FIELDS | TRAIN_FIELDS}
    quiet = quiet or world.rank != 0  # rank 0 is the voice
    con = console()
    if resume is None and init_from is None:  # a bad value is refused before anything is said
        run.check_new(options, np.float64 if float64 else np.float32)
    if out is None and resume is None:
        out = default_run_dir(corpus)  # named now, to say it now
    if not quiet:  # first, before anything slow
        con.print(f"charrnn: {_intent(corpus, out, resume, init_from, options, auto_size)}")
    compiled = []

    def warm(cell, dtype, precision="fp32"):
        compiled.append(_compile(con, quiet, cell, dtype, options.get("minutes"), precision))

    from ..warm import evaluations as warm_evaluations

    prepared, error = None, None
    try:
        prepared = run.prepare(
            corpus,
            out,
            resume=resume,
            init_from=init_from,
            data_dir=data_dir,
            glob=glob,
            byte_level=byte_level,
            max_vocab=max_vocab,
            force=force,
            dtype=np.float64 if float64 else np.float32,
            encoding=encoding,
            errors=errors,
            auto_size=auto_size,
            warm=warm,
            started=started,
            evaluations=warm_evaluations,
            **options,
        )
        if not compiled:  # --resume: the model's cell is known only from its checkpoint
            m = prepared.trainer.model
            warm(m.config.cell, m.dtype, prepared.trainer.cfg.precision)
        elif prepared.trainer.cfg.minutes:  # compiling and sizing count against the minutes
            prepared.trainer.budget.setup = time.perf_counter() - started
    except CharrnnError as e:
        error = e
    world.all_ok(error)  # a rank that cannot go on takes every rank with it, at once
    status = _run_training(prepared, world, quiet, con)
    if status == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)


def _intent(corpus, out, resume, init_from, options, auto_size):
    """The first line: what the run will do, said before the text is read."""
    if resume is not None:
        return f"resuming the run in {resume}"
    what = (
        "the default corpus (this Python's standard library source)"
        if corpus is None
        else "standard input"
        if corpus == "-"
        else corpus
    )
    budget = (
        f"{options['minutes']:g} minute{'s'[: options['minutes'] != 1]}"
        if options.get("minutes")
        else f"{options['steps']:,} steps"
        if options.get("steps")
        else f"{options.get('epochs') or DEFAULT_EPOCHS:g} passes over the text"
    )
    size = (
        f"{options.get('layers') or ModelConfig.layers} x {options['hidden']}"
        if options.get("hidden")
        else "from the base model"
        if init_from is not None
        else "sized from the budget"
        if options.get("minutes") and auto_size
        else "the preset size"
    )
    return f"training on {what} for {budget}, {size}, run directory {out}"


def _compile(con, quiet, cell, dtype, minutes, precision="fp32"):
    """Compile (or load) the training's kernels (of its products' precision), saying so when it
    compiles; returns the groups compiled."""
    from .. import warm

    what = "; counted in --minutes" if minutes else ""
    with Compiling(con, quiet, what) as report:
        return warm.prepare("train-bf16" if precision == "bf16" else "train", cell, dtype, report=report)


def _run_training(prepared, world, quiet, con):
    """Report what is about to train and run it (run.execute: in its locked run directory),
    stopping cleanly on SIGINT/SIGTERM; returns the trainer's status."""
    from ..training import run

    trainer = prepared.trainer
    m = trainer.model
    if prepared.notice and not quiet:
        con.print(f"charrnn: {prepared.notice}")
    if prepared.size_notice:  # shown even with --quiet: it may end badly
        con.print(f"charrnn: {prepared.size_notice}")
    if prepared.unknown_notice:  # so is this: every loss of the run depends on it
        con.print(f"charrnn: warning: {prepared.unknown_notice}")
    if not quiet:
        con.print(
            f"charrnn: {m.config.cell} {m.config.layers}x{m.config.hidden}, "
            f"{m.flat.size:,} parameters, vocabulary {m.config.vocab_size}, "
            f"{trainer.xs.size:,} training characters, "
            + ("bf16 products (--precision fp32: exact), " if trainer.cfg.precision == "bf16" else "")
            + f"run directory {trainer.run_dir}"
        )
        if world.size > 1:
            con.print(
                f"charrnn: data-parallel over {world.size} MPI ranks, "
                f"{trainer.cfg.batch} streams shared between them"
            )
    from .. import warm

    warm.release()  # sizing is done: the sampling kernels may compile beside the training
    stop = stop_flag(announce=world.rank == 0)
    try:
        with TrainingDisplay(con, trainer, quiet) as prog:
            status = run.execute(prepared, prog.update, stop.is_set)
    finally:
        stop.restore()
    summary(con, trainer, status, quiet)
    if world.rank == 0:  # whatever --quiet says: every number of the run depends on it
        no_better_than_unigram(con, trainer)
    world.finish()  # under MPI: no rank leaves while rank 0 still writes
    return status
