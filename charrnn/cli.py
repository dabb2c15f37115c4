"""The command line. stdout carries only the product (sampled text, a requested number or JSON);
progress, notices and errors go to stderr. Exit codes: 0 success, 1 a user-facing error,
2 a usage error, 130 interrupted.

Heavy modules (NumPy, Numba) are imported inside the commands, so `--help` and `--version` are
instant and `sample` pays only for what it uses.
"""
import contextlib
import functools
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .config import CLI_NAMES, MODEL_FIELDS, TRAIN_FIELDS, ModelConfig as M, TrainConfig as T
from .errors import CharrnnError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Train character-level recurrent language models and sample text from them.")

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def _console():
    from rich.console import Console
    return Console(stderr=True, highlight=False, soft_wrap=True)  # a log line stays one line


def fail(message, code=EXIT_ERROR):
    sys.stderr.write(f"charrnn: error: {message}\n")
    raise typer.Exit(code)


def user_errors(fn):
    """Turn library errors into one line on stderr and exit 1; Ctrl-C into exit 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            fail(str(e), EXIT_USAGE)
        except CharrnnError as e:
            fail(str(e))
        except KeyboardInterrupt:
            sys.stderr.write("charrnn: interrupted\n")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except MemoryError:
            fail(f"out of memory; {MEMORY_HINTS.get(fn.__name__, MEMORY_HINT)}")
    return wrapper


# what each command can do about memory (sample has no --batch, --seq or --hidden)
MEMORY_HINT = "the model needs more memory than this machine has free"
MEMORY_HINTS = {"train": "try a smaller --batch, --seq or --hidden",
                "sample": "try fewer --num-samples; " + MEMORY_HINT,
                "eval": MEMORY_HINT}


class compile_notice:
    """Says on stderr that Numba is compiling when warming up takes longer than a moment
    (the first run after install); silent when the cache is warm and the machine not busy.
    How long a first compile takes: docs/benchmarks.md, "Figures behind the code"."""

    def __init__(self, quiet=False, delay=1.5):
        self.quiet, self.delay = quiet, delay

    def __enter__(self):
        msg = ("charrnn: compiling kernels (first run only: 30 s to 2 minutes on 2 cores, "
               "longer when they are busy; cached for next time)...\n")
        self.timer = threading.Timer(self.delay, lambda: sys.stderr.write(msg))
        self.timer.daemon = True
        if not self.quiet:
            self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()


def _version(value: bool):
    if value:
        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
):
    """charrnn: character-level LSTM/GRU/RNN language models with hand-written Numba kernels."""
    from .engine.threads import preload_blas
    preload_blas()  # before Numba first initialises: 0.2 s of every command's start-up


# ---------------------------------------------------------------------------------------------
# train

Opt = typer.Option
EncodingOpt = Annotated[Optional[str], Opt(
    show_default=False, help="The text's encoding (any Python codec: latin-1, cp1252, utf-16, "
                             "shift_jis, ...). Default: UTF-8, or UTF-16/32 when the text starts "
                             "with their byte-order mark.")]
ErrorsOpt = Annotated[str, Opt(help="Bytes that do not decode: strict (an error), replace (each "
                                    "becomes U+FFFD, the unknown symbol) or ignore (dropped); "
                                    "a count is reported.")]


def run_opt(help, default=None, *decls, **kw):
    """An option of the run's configuration: None unless given, so that config.resolve applies
    the precedence rules (a given option, the --resume run's or --init-from model's, the budget
    preset, then config.py's default, written there once and shown here)."""
    if default is not None:
        help = f"{help}  [default: {default}]"
    return Opt(*decls, help=help, show_default=False, **kw)


@app.command()
@user_errors
def train(
    ctx: typer.Context,
    corpus: Annotated[Optional[str], typer.Argument(
        help="Training text: a file, a directory of text files, '-' for stdin, or a corpus name "
             "such as 'tinyshakespeare'. Default: this Python's standard library source.")] = None,
    out: Annotated[Optional[Path], Opt("--out", "-o", help="Run directory for checkpoints and "
                                       "metrics. Default: <corpus>-<date>-<time> under "
                                       "$CHARRNN_RUNS, else under ./runs.")] = None,
    cell: Annotated[Optional[str], run_opt("Recurrent cell: lstm, gru or rnn.", M.cell)] = None,
    layers: Annotated[Optional[int], run_opt("Number of stacked recurrent layers.",
                                             M.num_layers)] = None,
    hidden: Annotated[Optional[int], run_opt(
        "Units per layer. Default: sized to the budget, 512 for --minutes 10 or more, 384 for 5 "
        "or more, otherwise 256.")] = None,
    dropout: Annotated[Optional[float], run_opt(
        "Dropout between layers and before the decoder. Default: 0.2 with the 512 preset, 0.1 "
        "with 384, otherwise 0.")] = None,
    batch: Annotated[Optional[int], run_opt("Parallel streams per step (batch size).",
                                            T.batch_size)] = None,
    seq: Annotated[Optional[int], run_opt("Characters per step and stream (BPTT window).",
                                          T.seq_len)] = None,
    lr: Annotated[Optional[float], run_opt("Adam learning rate (peak).", T.lr)] = None,
    grad_clip: Annotated[Optional[float], run_opt("Clip the global gradient norm (0: off).",
                                                  T.grad_clip)] = None,
    schedule: Annotated[Optional[str], run_opt(
        "Learning-rate schedule: constant or cosine (decays over the --steps/--minutes/--epochs "
        "budget).", T.schedule)] = None,
    warmup: Annotated[Optional[int], run_opt("Linear learning-rate warm-up steps.",
                                             T.warmup)] = None,
    lr_decay: Annotated[Optional[float], run_opt(
        "constant schedule: multiply lr by this each epoch after --lr-decay-after epochs.",
        T.lr_decay)] = None,
    lr_decay_after: Annotated[Optional[int], run_opt("Epochs before --lr-decay applies.",
                                                     T.lr_decay_after)] = None,
    weight_decay: Annotated[Optional[float], run_opt("Decoupled weight decay.",
                                                     T.weight_decay)] = None,
    steps: Annotated[Optional[int], run_opt("Stop after this many optimizer steps (0: no limit).",
                                            T.steps)] = None,
    minutes: Annotated[Optional[float], run_opt("Stop after this much training time (0: no limit).",
                                                T.minutes)] = None,
    epochs: Annotated[Optional[float], run_opt(
        "Stop after this many passes over the text (0: no limit; 10 when no budget is given).",
        T.epochs)] = None,
    val_frac: Annotated[Optional[float], run_opt(
        "Fraction at the end of the text held out for validation.", T.val_frac)] = None,
    eval_every: Annotated[Optional[int], run_opt("Steps between evaluations and checkpoints.",
                                                 T.eval_every)] = None,
    eval_chars: Annotated[Optional[int], run_opt(
        "Validation characters read per evaluation, ten times as many at the last one (0: all).",
        T.eval_chars)] = None,
    keep: Annotated[Optional[int], run_opt("Also keep the last N step-stamped checkpoints.",
                                           T.keep)] = None,
    patience: Annotated[Optional[int], run_opt(
        "Stop after N evaluations without improvement (0: never).", T.patience)] = None,
    seed: Annotated[Optional[int], run_opt("Random seed.", T.seed)] = None,
    state_reset: Annotated[Optional[int], run_opt(
        "Reset each stream's carried state at random, on average every this many characters "
        "(0: never), so the model can start from a zero state as sampling does.",
        T.state_reset)] = None,
    log_grad_norms: Annotated[Optional[bool], run_opt(
        "At each evaluation, show how the gradient |dL/dh_t| of the first layer changes across "
        "the window (vanishing or exploding).", None,
        "--log-grad-norms/--no-log-grad-norms")] = None,
    resume: Annotated[Optional[Path], Opt(help="Continue the run in this directory exactly "
                                          "where it stopped.")] = None,
    init_from: Annotated[Optional[Path], Opt(help="Start from a trained checkpoint's weights "
                                             "(fine-tuning).")] = None,
    byte_level: Annotated[bool, Opt("--bytes", help="Model raw bytes instead of Unicode "
                                    "characters.")] = False,
    max_vocab: Annotated[Optional[int], Opt(help="Keep the N most frequent characters; the rest "
                                            "become one unknown symbol.")] = None,
    encoding: EncodingOpt = None,
    errors: ErrorsOpt = "strict",
    glob: Annotated[Optional[str], Opt(help="With a directory CORPUS: only files matching this "
                                       "pattern, e.g. '*.py'.")] = None,
    data_dir: Annotated[Optional[Path], Opt(envvar="CHARRNN_DATA_DIR", help="Where named corpora "
                                            "are looked for and downloaded to.")] = None,
    float64: Annotated[bool, Opt("--float64", help="Train in float64 (slow; for checks).")] = False,
    threads: Annotated[Optional[int], Opt(
        envvar="CHARRNN_THREADS", show_default=False,
        help="Cores to train on. Default: all this process may use.")] = None,
    force: Annotated[bool, Opt(help="Start over in a run directory that holds a run (one "
                                    "that a live training holds is always refused).")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No progress output.")] = False,
):
    """Train a model on a text and write checkpoints to the run directory."""
    import numpy as np
    from .training import dist, run
    _use_threads(threads)
    world = dist.world()  # under mpiexec: one of several processes training one model
    options = {CLI_NAMES.get(k, k): v for k, v in ctx.params.items()
             if CLI_NAMES.get(k, k) in MODEL_FIELDS | TRAIN_FIELDS}
    prepared, error = None, None
    try:
        prepared = run.prepare(corpus, out, resume=resume, init_from=init_from, data_dir=data_dir,
                               glob=glob, byte_level=byte_level, max_vocab=max_vocab, force=force,
                               dtype=np.float64 if float64 else np.float32, encoding=encoding,
                               errors=errors, **options)
    except CharrnnError as e:
        error = e
    world.all_ok(error)  # a rank that cannot go on takes every rank with it, at once
    status = _run_training(prepared, world, quiet or world.rank != 0)  # rank 0 is the voice
    if status == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)


def _run_training(prepared, world, quiet):
    """Report what is about to train, warm the kernels, and run it in its locked run directory,
    stopping cleanly on SIGINT/SIGTERM; returns the trainer's status."""
    from . import api
    from .training import run
    con = _console()
    trainer = prepared.trainer
    m = trainer.model
    if prepared.notice and not quiet:
        con.print(f"charrnn: {prepared.notice}")
    if prepared.size_notice:  # shown even with --quiet: it may end badly
        con.print(f"charrnn: {prepared.size_notice}")
    if prepared.unknown_notice:  # so is this: every loss of the run depends on it
        con.print(f"charrnn: warning: {prepared.unknown_notice}")
    if not quiet:
        con.print(f"charrnn: {m.config.cell} {m.config.num_layers}x{m.config.hidden_size}, "
                  f"{m.flat.size:,} parameters, vocabulary {m.config.vocab_size}, "
                  f"{trainer.xs.size:,} training characters, run directory {trainer.run_dir}")
        if world.size > 1:
            con.print(f"charrnn: data-parallel over {world.size} MPI ranks, "
                      f"{trainer.cfg.batch_size} streams shared between them")
    with compile_notice(quiet):
        api.warmup(m.config.cell, m.dtype)
    stop = _stop_flag(announce=world.rank == 0)
    try:
        with contextlib.ExitStack() as stack:
            error = None
            if world.rank == 0:  # rank 0 holds the run directory and writes in it
                try:
                    stack.enter_context(run.run_directory(trainer.run_dir, seen=prepared.dir_seen))
                except CharrnnError as e:
                    error = e
            world.all_ok(error)
            prog = stack.enter_context(_Progress(con, trainer, quiet))
            status = trainer.run(prog.update, stop.is_set)
    finally:
        stop.restore()
    _summary(con, trainer, status, quiet)
    world.finish()  # under MPI: no rank leaves while rank 0 still writes
    return status


def _use_threads(n):
    """--threads (or CHARRNN_THREADS, which Typer reads into it): one setting for the run."""
    if n is not None:
        if n < 1:
            fail("--threads (or CHARRNN_THREADS) must be at least 1", 2)
        from .engine import threads as threads_mod
        threads_mod.configure(n)


def _stop_flag(announce=True):
    """SIGINT/SIGTERM set a flag; the trainer finishes its step, saves, and returns.
    flag.restore() puts the previous handlers back (for callers that live on, such as tests)."""
    flag = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore():
        for s, old in previous.items():
            signal.signal(s, old)
    flag.restore = restore

    def handler(signum, frame):
        if flag.is_set():  # a second Ctrl-C: the user insists
            raise KeyboardInterrupt
        flag.set()
        if announce:
            sys.stderr.write("\ncharrnn: stopping after this step and saving (Ctrl-C again "
                             "to abandon it)\n")
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return flag


def _fmt(x, spec=".4f"):
    return "-" if x is None or x != x else format(x, spec)


def _eta(s):
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _Progress:
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
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
                                console=self.con, transient=False)
            self.bar.start()
            self.task = self.bar.add_task("training", total=1.0, stats="",
                                          completed=self.trainer.progress())
        return self

    def update(self, e):
        if self.quiet:
            return
        kind = e.get("kind", "eval")
        if kind == "full":
            self._print(f"best.npz (step {e['step']}) on {'all ' if e.get('all') else ''}"
                        f"{e['val_chars_full']:,} validation characters: "
                        f"{_fmt(e['val_loss_full'])} nats/char")
            return
        line = _progress_line(e)
        if self.live:
            self.bar.update(self.task, completed=self.trainer.progress(), stats=line)
            if kind == "eval":
                self.bar.console.print(line + _grad_norms(e))
        elif kind == "eval" or self.printed is None or \
                time.monotonic() - self.printed >= self.PIPE_SECONDS:
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
    val = f"val {_fmt(e['val_loss'])}{' *' if e.get('best') else '  '}" if "val_loss" in e \
        else " " * 12
    return (f"step {e['step']:>6}  epoch {e['epoch']:7.3f}  train {_fmt(e['train_loss'])}  "
            f"{val}  {e['chars_per_sec']:,.0f} chars/s  left {_eta(e['eta'])}")


def _grad_norms(e):
    if "grad_norms" not in e:
        return ""
    g = e["grad_norms"]
    last = g[-1] or 1.0
    picks = sorted({len(g) - 1 - k for k in (0, 1, 2, 5, 10, 20, 50, 100) if k < len(g)},
                   reverse=True)
    return "\n  |dL/dh_t| / |dL/dh_T-1|: " + "  ".join(
        f"t=T-{len(g) - 1 - t}:{g[t] / last:.3g}" for t in picks)


def _summary(con, t, status, quiet):
    if quiet:
        return
    import numpy as np
    how = {"done": "finished", "patience": "stopped early (no improvement)",
           "interrupted": "interrupted"}[status]
    best = ("no validation text (best.npz is the last model)" if not t.sample.length else
            f"best val {_fmt(t.best_val)} at step {t.best_step}" if t.best_step else
            "no evaluation")
    unk = t.model.vocab.unk_id
    if t.best_step and t.sample.length and unk >= 0:
        share = np.count_nonzero(np.asarray(t.val_ids) == unk) / len(t.val_ids)
        if share > 0.01:
            best += f" ({100 * share:.0f}% of the validation text is the unknown symbol)"
    rate = t.chars_seen / t.elapsed if t.elapsed > 0 else 0
    con.print(f"charrnn: {how} at step {t.step} after {t.elapsed:.0f}s; {best}; "
              f"{rate:,.0f} chars/s overall; checkpoints in {t.run_dir}")


# ---------------------------------------------------------------------------------------------
# sample, eval, info

CkptOpt = Annotated[Optional[Path], Opt(
    "--checkpoint", "-c", help="A checkpoint file, a run directory, or a run's name under the "
                               "run root ($CHARRNN_RUNS, else ./runs). Default: the best "
                               "checkpoint of the most recently written run there.")]


def _read_prime(prime, prime_file, byte_level):
    """The prime: text for a character model (a file or stdin decoded as the training text
    is: UTF-8, or UTF-16/32 with a byte-order mark), raw bytes for a byte-level one."""
    from .text import data
    if prime is not None and prime_file is not None:
        fail("give --prime or --prime-file, not both", 2)
    if prime_file is not None:
        try:
            raw = prime_file.read_bytes()
        except OSError as e:
            fail(f"cannot read --prime-file {prime_file}: {e.strerror or e}")
        name = str(prime_file)
    elif prime == "-":
        raw, name = getattr(sys.stdin, "buffer", sys.stdin).read(), "the prime on stdin"
        raw = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    elif byte_level:  # argv as the shell gave it: any bytes survive
        return (prime or "").encode("utf-8", "surrogateescape")
    else:
        return prime or ""
    if byte_level:
        return raw
    return data.prepare_input(raw, name, False, data.Decoding(hint="")) if raw else ""


class _Out:
    """Writes text (or a byte-level model's bytes) to stdout as it comes; a reader that went
    away ends generation quietly."""

    def __init__(self, byte_level=False, keep=False):
        self.stream = sys.stdout.buffer if byte_level else sys.stdout
        self.empty = b"" if byte_level else ""
        self.keep, self.written, self.last = keep, self.empty, self.empty
        # keep a copy only when asked (-n 0 is endless)

    def write(self, s):
        if not s:
            return
        self.stream.write(s)
        self.stream.flush()
        self.last = s[-1:]
        if self.keep:
            self.written += s

    def end_line(self):
        """On a terminal, end with a newline so the shell prompt starts on a line of its own."""
        newline = b"\n" if isinstance(self.empty, bytes) else "\n"
        if self.last and self.last != newline and sys.stdout.isatty():
            self.stream.write(newline)
            self.stream.flush()


def _load(checkpoint):
    """The model of -c (see checkpoint.resolve); says on stderr which checkpoint it is when the
    choice was implicit (no -c, a run without best.npz, a directory of runs)."""
    from . import api, checkpoint as ck
    path, note = ck.resolve_explained(checkpoint)
    if note:
        sys.stderr.write(f"charrnn: {note}\n")
    return api.load(path)


def _quiet_broken_pipe():
    """The reader closed the pipe: silence stdout so interpreter shutdown does not complain."""
    _to_devnull(sys.stdout)


def _to_devnull(stream):
    """Point a stream's descriptor at /dev/null (its reader has gone)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):
        pass


@app.command()
@user_errors
def sample(
    checkpoint: CkptOpt = None,
    length: Annotated[int, Opt("--length", "-n", help="Characters to generate per sample "
                                                     "(0: without end).")] = 500,
    temp: Annotated[float, Opt(help="Temperature: lower is safer, higher is wilder; "
                                    "0 is greedy.")] = 1.0,
    top_k: Annotated[int, Opt(help="Sample only among the K likeliest characters "
                                   "(0: off).")] = 0,
    top_p: Annotated[float, Opt(help="Nucleus sampling: the smallest set of characters "
                                     "holding this much probability (1: off).")] = 1.0,
    prime: Annotated[Optional[str], Opt(help="Text that warms up the state and is printed first; "
                                        "'-' reads it from stdin.")] = None,
    prime_file: Annotated[Optional[Path], Opt(help="Read the prime from this file.")] = None,
    drop_unknown: Annotated[bool, Opt(help="Drop prime characters the model never saw instead "
                                           "of failing.")] = False,
    seed: Annotated[Optional[int], Opt(help="Random seed: the same seed gives the same text. "
                                            "Default: fresh randomness.")] = None,
    num_samples: Annotated[int, Opt(help="Independent samples, generated together in one "
                                         "batch.")] = 1,
    separator: Annotated[str, Opt(help="Written between samples (backslash escapes such as \\n "
                                       "are understood).")] = "\\n\\n",
    stop: Annotated[Optional[str], Opt(help="End a sample at the first occurrence of this string "
                                            "(escapes understood, e.g. '\\n\\n').")] = None,
    presence_penalty: Annotated[float, Opt(help="Lower the logit of each character already "
                                                "generated by this, as OpenAI's API does "
                                                "(-2 to 2; 0: off).")] = 0.0,
    frequency_penalty: Annotated[float, Opt(help="Lower each character's logit by this times "
                                                 "the times it was generated (-2 to 2; "
                                                 "0: off).")] = 0.0,
    penalty_window: Annotated[int, Opt(help="The penalties count only the last W characters "
                                            "generated (0: the whole sample).")] = 0,
    no_repeat: Annotated[int, Opt(help="Never generate an N-character sequence twice in a "
                                       "sample (0: off).")] = 0,
    novelty: Annotated[bool, Opt(help="Afterwards, report on stderr which fraction of the "
                                      "sample's n-grams occur verbatim in the training text.")] = False,
    data_dir: Annotated[Optional[Path], Opt(envvar="CHARRNN_DATA_DIR", help="Where named corpora "
                                            "are looked for (for --novelty).")] = None,
    threads: Annotated[Optional[int], Opt(
        envvar="CHARRNN_THREADS", show_default=False,
        help="Cores to sample on. Default: one. More split each step of a wide LSTM's single "
             "sample across them: faster on idle cores, far slower beside other busy work.")] = None,
    precision: Annotated[str, Opt(help="The weights' format while sampling: fp32 (exact), bf16 "
                                       "or int8 (2 or 1 bytes a weight: faster on a large "
                                       "model, slightly different text; `charrnn eval "
                                       "--precision` shows what it costs).")] = "fp32",
):
    """Generate text from a trained model; only the text goes to stdout (a byte-level model's
    samples as the raw bytes, for binary-safe pipes)."""
    _use_threads(threads)
    from .completion import Stream, check_stop, complete, prepare_prime
    from .config import SampleConfig
    cfg = SampleConfig(length, temp, top_k, top_p, num_samples,
                       stop=_unescape(stop) if stop else None, seed=seed,
                       presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                       penalty_window=penalty_window, no_repeat=no_repeat,
                       precision=precision).validate()
    from . import api
    model = _load(checkpoint)
    p = prepare_prime(model, _read_prime(prime, prime_file, model.byte_level),
                      "drop" if drop_unknown else "error")
    if p.dropped:
        sys.stderr.write(f"charrnn: left {p.dropped} character{'s'[:p.dropped != 1]} the model "
                         "does not know out of the prime\n")
    check_stop(model, cfg.stop)  # before compiling: a stop string it can never write
    with compile_notice():
        api.warmup(model.config.cell, model.dtype, sampling=True, precision=precision)
    out = _Out(model.byte_level, keep=novelty)
    try:
        out.write(p.text)
        if num_samples == 1:
            stream = Stream(model, cfg, p)
            for piece in stream:
                out.write(piece)
            ends = [stream.finish_reason]
        else:
            done = complete(model, cfg, p)
            sep = _unescape(separator)
            sep = sep.encode("utf-8", "surrogateescape") if model.byte_level else sep
            out.write((sep + p.text).join(c.text for c in done))
            ends = [c.finish_reason for c in done]
        out.end_line()
    except BrokenPipeError:
        _quiet_broken_pipe()
        return
    cut = ends.count("length")
    if cfg.stop and cut:
        which = "the sample" if num_samples == 1 else f"{cut} of {num_samples} samples"
        sys.stderr.write(f"charrnn: {which} ended at --length {length}, not at the stop "
                         "string\n")
    if novelty:
        _report_novelty(model, out.written[len(p.text):], data_dir)


def _report_novelty(model, sample, data_dir):
    from .text import data
    from .text.novelty import copied_fraction
    info = model.meta.info
    if info.source == "-":
        fail("--novelty needs the training text, but this model was trained on stdin")
    decoding = data.Decoding(info.encoding, info.errors or "strict")
    corpus, _ = data.read_text(info.source, data_dir=data_dir, glob=info.glob,
                               byte_level=model.byte_level, decoding=decoding)
    parts = [f"{n}-grams {100 * f:.1f}%" for n, f in copied_fraction(sample, corpus).items()]
    sys.stderr.write("charrnn: copied verbatim from the training text: "
                     + (", ".join(parts) or "sample too short") + "\n")


def _unescape(s):
    if "\\" not in s:
        return s
    return s.encode("latin-1", "backslashreplace").decode("unicode_escape")


@app.command("eval")
@user_errors
def evaluate(
    file: Annotated[str, typer.Argument(help="The text to score: a file, '-' for stdin, or a "
                                             "corpus name.")],
    checkpoint: CkptOpt = None,
    exact: Annotated[bool, Opt("--exact", help="Read the text as one continuous stream from a "
                                               "zero state and score every character after "
                                               "the first (one stream: slower).")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
    encoding: EncodingOpt = None,
    errors: ErrorsOpt = "strict",
    drop_unknown: Annotated[bool, Opt(help="Leave out characters the model never saw instead "
                                           "of failing.")] = False,
    data_dir: Annotated[Optional[Path], Opt(envvar="CHARRNN_DATA_DIR", help="Where named corpora "
                                            "are looked for.")] = None,
    max_unknown: Annotated[float, Opt(help="A --max-vocab model reads the characters it lacks "
                                           "as its unknown symbol, which is cheap to predict: "
                                           "refuse to score a text with more than this share "
                                           "of them (the loss over the known characters is "
                                           "reported apart either way).")] = 0.05,
    dynamic: Annotated[bool, Opt("--dynamic", help="Also report the dynamic-evaluation loss "
                                                   "(Krause et al. 2018): the text read as one "
                                                   "stream, the weights adapted by one SGD step "
                                                   "on each 100-character segment after it is "
                                                   "scored. A separate number, never the "
                                                   "model's static loss.")] = False,
    dynamic_lr: Annotated[float, Opt(help="The SGD step of --dynamic.")] = 0.003,
    precision: Annotated[str, Opt(help="Score the weights as `charrnn sample --precision` reads "
                                       "them: fp32 (exact), bf16 or int8, to see what a "
                                       "reduced precision costs.")] = "fp32",
):
    """Print the model's loss on a text in nats and bits per character, and how many
    characters it scored. The text is read as the model was trained: bytes for a byte-level
    model, else decoded (--encoding, --errors).

    By default the text is cut into up to 50 equal streams that the model reads side by side,
    each from a zero state: fast, but the first characters of every stream are predicted
    without the text before them and up to 49 characters at the end are left out (on Tiny
    Shakespeare's validation text the score moves by 0.002-0.007 nats/char). --exact reads
    the text as one stream, as sampling would, and scores every character after the first.
    """
    import math
    from . import api
    from .text import data
    if not 0 <= max_unknown <= 1:
        fail("--max-unknown must be in [0, 1]", EXIT_USAGE)
    if not 0 <= dynamic_lr < math.inf:
        fail("--dynamic-lr must be 0 or a positive number", EXIT_USAGE)
    from .config import check_precision
    check_precision(precision)
    model = _load(checkpoint)
    if precision != "fp32":
        model = model.at_precision(precision)
    decoding = data.Decoding(encoding, errors, hint="")
    text, desc = data.read_text(file, data_dir=data_dir, byte_level=model.byte_level,
                                decoding=decoding)
    if decoding.notice():
        sys.stderr.write(f"charrnn: {decoding.notice()}\n")
    with compile_notice():
        api.warmup(model.config.cell, model.dtype)
    unknown = "drop" if drop_unknown else None
    try:
        score = model.score(text, exact=exact, unknown=unknown)
    except CharrnnError as e:
        if drop_unknown or "not in the vocabulary" not in str(e):
            raise
        fail(f"{e}; pass --drop-unknown to leave them out")
    nats, share = score.nats, score.unknown_share
    if share > max_unknown:
        fail(f"{100 * share:.1f}% of the scored characters ({score.unknown:,} of "
             f"{score.chars:,}) are unknown to the model, and it predicts its unknown symbol "
             f"cheaply: the loss would be {nats:.4f}, "
             + (f"but {score.nats_known:.4f} nats/char over the known ones"
                if math.isfinite(score.nats_known) else "and none of them is known")
             + f"; pass --max-unknown {min(1.0, math.ceil(share * 100) / 100)} to score it "
             "anyway")
    adapted = None
    if dynamic:
        from .engine.dynamic import dynamic_score
        ids = model.encode(text, unknown="drop" if drop_unknown else
                           "unk" if model.vocab.unk_id >= 0 else "error")
        adapted = dynamic_score(model, ids, lr=dynamic_lr).nats
    if as_json:
        d = {"file": desc, "chars": score.chars, "streams": score.streams, "exact": exact,
             "precision": precision,
             "nats_per_char": nats, "bits_per_char": nats / math.log(2),
             "unknown_chars": score.unknown, "nats_per_char_known": _finite(score.nats_known)}
        if dynamic:
            d.update(dynamic_nats_per_char=adapted, dynamic_lr=dynamic_lr)
        print(json.dumps(d))
    else:
        how = "one stream" if score.streams == 1 else f"{score.streams} streams"
        unk = ""
        if score.unknown:
            unk = (f"; {score.unknown:,} ({100 * share:.2f}%) unknown to the model, "
                   + (f"{score.nats_known:.4f} nats/char over the known ones"
                      if math.isfinite(score.nats_known) else "none known"))
        print(f"{nats:.4f} nats/char  {nats / math.log(2):.4f} bits/char  "
              f"({score.chars:,} characters scored, read as {how}{unk}"
              + (f"; weights as {precision}" if precision != "fp32" else "") + ")")
        if dynamic:
            print(f"{adapted:.4f} nats/char  {adapted / math.log(2):.4f} bits/char  dynamic "
                  f"evaluation (one stream, SGD {dynamic_lr:g} after each 100-character "
                  "segment; not the static loss)")


def _finite(x):
    """x, or None where JSON would need NaN or Infinity."""
    import math
    return x if x is not None and math.isfinite(x) else None


@app.command()
@user_errors
def info(
    checkpoint: Annotated[Optional[Path], typer.Argument(
        help="A checkpoint file, run directory or run name (default: the latest run).")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
):
    """Show a checkpoint's model, vocabulary and training history."""
    from . import api, checkpoint as ck
    path, note = ck.resolve_explained(checkpoint)
    if note:
        sys.stderr.write(f"charrnn: {note}\n")
    d = api.describe(ck.load(path)[0])
    d["path"] = str(path)
    if as_json:
        print(json.dumps(d))
        return
    print(f"{path}: {d['cell']} {d['layers']}x{d['hidden']}, {d['params']:,} parameters, "
          f"vocabulary {d['vocab_size']} ({d['vocab_kind']}), dropout {d['dropout']}")
    print(f"trained on {d['corpus']}: step {d['step']}, epoch {d['epoch']}, "
          f"{d['chars_seen'] or 0:,} characters in {d['elapsed_seconds'] or 0:.0f}s; "
          f"val loss {_fmt(d['val_loss'])}, best {_fmt(d['best_val_loss'])}")
    if d["val_loss_full"] is not None:
        print(f"final larger evaluation, {d['val_chars_full']:,} validation characters: "
              f"{_fmt(d['val_loss_full'])}")
    for h in d["history"][-10:]:
        print(f"  step {h['step']:>7}  {h['elapsed']:8.1f}s  train {_fmt(h['train_loss'])}  "
              f"val {_fmt(h['val_loss'])}")


@app.command()
@user_errors
def plot(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (it holds metrics.jsonl).")],
    png: Annotated[Optional[Path], Opt("--png", help="Also write the curves to this PNG file "
                                       "(needs matplotlib: pip install 'charrnn[plot]').")] = None,
    x: Annotated[str, Opt(help="Horizontal axis: elapsed (seconds) or chars.")] = "elapsed",
):
    """Draw the run's training and validation loss against time or characters seen."""
    from .training import plot as plotting
    if x not in ("elapsed", "chars"):
        fail("--x must be elapsed or chars", 2)
    rows = plotting.read_metrics(run_dir)
    for line in plotting.text_chart(rows, x):
        print(line)
    if png is not None:
        plotting.png(rows, png)
        sys.stderr.write(f"charrnn: wrote {png}\n")


# ---------------------------------------------------------------------------------------------
# runs, cache

@app.command("runs")
@user_errors
def list_runs(
    directory: Annotated[Optional[Path], typer.Argument(
        help="A directory of runs, or one run directory. Default: $CHARRNN_RUNS, else "
             "./runs.")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON array.")] = False,
):
    """List runs with their corpus, model, steps, best validation loss and last write, oldest
    first."""
    from . import checkpoint as ck
    from .training import runs
    where = ck.runs_root() if directory is None else directory
    if not where.is_dir():
        if directory is not None:
            fail(f"{where} is not a directory")
        rows = []
    else:
        rows = runs.listing(where)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        sys.stderr.write(f"charrnn: no runs under {where}/ (set CHARRNN_RUNS, or pass a "
                         "directory)\n")
        return
    sys.stderr.write(f"charrnn: runs in {where.resolve()}\n")
    table = [("date", "run", "corpus", "model", "steps", "best val", "")]
    for r in rows:
        model = f"{r['cell']} {r['layers']}x{r['hidden']}" if r["cell"] else "-"
        table.append(((r["date"] or "-")[:16].replace("T", " "), r["name"], _short(r["corpus"]), model,
                      "-" if r["steps"] is None else f"{r['steps']:,}",
                      _fmt(r["best_val_loss"]), r["note"] or ""))
    _print_table(table, right={4, 5})


def _short(corpus):
    """'/long/path/input.txt (1,115,394 chars)' as 'input.txt (1,115,394 chars)'."""
    if not corpus:
        return "-"
    name, sep, rest = corpus.rpartition(" (")
    return f"{os.path.basename(name.rstrip('/')) or name}{sep}{rest}" if sep else corpus


def _print_table(rows, right=()):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        print("  ".join(cells).rstrip())


@app.command()
@user_errors
def cache(
    clear: Annotated[bool, Opt("--clear", help="Remove every entry (each is rebuilt when its "
                                               "corpus is next trained on).")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
):
    """Show the id cache (corpus files of 1 MiB or more, encoded for training): its directory,
    size and entries, least recently used first. It keeps itself under CHARRNN_CACHE_MAX
    (default 4G; 0: no cap) by removing least recently used entries."""
    from datetime import datetime
    from .text import cachedir, idcache
    from .training.memory import fmt_bytes
    where = idcache.cache_dir()
    if clear:
        count, freed = cachedir.clear(where)
        sys.stderr.write(f"charrnn: removed {count} entr{'y' if count == 1 else 'ies'}, "
                         f"freed {fmt_bytes(freed)} in {where}\n")
        return
    found, cap = cachedir.entries(where), cachedir.max_bytes()
    total = sum(e.size for e in found)
    when = lambda e: datetime.fromtimestamp(e.last_used).astimezone()
    if as_json:
        print(json.dumps({"dir": str(where), "bytes": total, "max_bytes": cap or None,
                          "entries": [{"source": e.source, "bytes": e.size,
                                       "vocab_size": e.vocab_size, "length": e.length,
                                       "last_used": when(e).isoformat("T", "seconds"),
                                       "key": e.key, "read_as": e.mode, "current": e.current}
                                      for e in found]}, ensure_ascii=False))
        return
    limit = f"of a {fmt_bytes(cap)} cap" if cap else "(no cap)"
    print(f"{where}: {len(found)} entr{'y' if len(found) == 1 else 'ies'}, {fmt_bytes(total)} "
          f"{limit}")
    if found:
        table = [("last used", "size", "vocab", "length", "key", "read as", "source")]
        table += [(when(e).strftime("%Y-%m-%d %H:%M"), fmt_bytes(e.size),
                   "-" if e.vocab_size is None else e.vocab_size,
                   "-" if e.length is None else f"{e.length:,}", e.key[:8], e.mode or "-",
                   (e.source or "(incomplete entry)")
                   + (" (changed since: a stale entry)" if e.current is False else ""))
                  for e in found]
        _print_table(table, right={1, 2, 3})


# ---------------------------------------------------------------------------------------------
# sweep

@app.command()
@user_errors
def sweep(
    corpus: Annotated[Optional[str], typer.Argument(
        help="Training text, as `charrnn train` takes it (a file, a directory or a corpus "
             "name).")] = None,
    trials: Annotated[int, Opt(help="The study's total number of trials: a rerun (or another "
                                    "worker) runs only those still missing.")] = 20,
    minutes: Annotated[float, Opt(help="Each trial's training time, evaluations "
                                       "included.")] = 0.0,
    steps: Annotated[int, Opt(help="Each trial's optimizer steps (instead of --minutes).")] = 0,
    out: Annotated[Optional[Path], Opt("--out", "-o", help="Sweep directory: the study's "
                                       "journal and one run directory per trial. Default: "
                                       "sweeps/<corpus>.")] = None,
    space: Annotated[Optional[Path], Opt(help="A TOML or JSON file that narrows or fixes "
                                         "options (see docs/scale-out.md).")] = None,
    jobs: Annotated[int, Opt(help="Trials run at once on this machine, each in its own process "
                                  "with its share of the cores.")] = 1,
    storage: Annotated[Optional[str], Opt(help="Where the study lives: a database URL Optuna "
                                          "accepts (postgresql://user@host/db), shared by "
                                          "machines, or a journal file's path. Default: "
                                          "the sweep directory's journal file.")] = None,
    study: Annotated[Optional[str], Opt(help="The study's name in the storage. Default: the "
                                        "sweep directory's name.")] = None,
    evals: Annotated[int, Opt(help="Evaluations per trial, at even fractions of its budget; "
                                   "the pruner compares trials there.")] = 4,
    eval_chars: Annotated[int, Opt(help="Validation characters read per evaluation, ten times "
                                        "as many at the last one (0: all).")] = T.eval_chars,
    val_frac: Annotated[float, Opt(help="Fraction at the end of the text held out for "
                                        "validation.")] = T.val_frac,
    seed: Annotated[int, Opt(help="Seeds the sampler and every trial's training.")] = T.seed,
    prune: Annotated[bool, Opt(help="Stop trials whose validation loss lags the median of "
                                    "earlier trials at the same point.")] = True,
    data_dir: Annotated[Optional[Path], Opt(envvar="CHARRNN_DATA_DIR", help="Where named corpora "
                                            "are looked for and downloaded to.")] = None,
    show: Annotated[Optional[Path], Opt(help="Print the trials of the sweep in this directory "
                                        "and name the best run.")] = None,
    as_json: Annotated[bool, Opt("--json", help="With --show: print one JSON object.")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No progress output.")] = False,
):
    """Search cell, layers, hidden size, dropout, learning rate, window and batch with Optuna
    (pip install 'charrnn[sweep]'); each trial is a run directory under the sweep directory."""
    from .sweep import study as sweeps, space as sweep_space
    if show is not None:
        if corpus is not None:
            fail("--show takes a sweep directory, not a CORPUS", 2)
        res = sweeps.results(show, storage, study)
        print(json.dumps(res) if as_json else "\n".join(_sweep_table(res)))
        return
    if corpus is None:
        fail("give a CORPUS to sweep over (or --show DIR)", 2)
    if jobs < 1:
        fail("--jobs must be at least 1", 2)
    sw = sweeps.Sweep(corpus, out if out is not None else sweeps.default_dir(corpus),
                      trials=trials, minutes=minutes, steps=steps,
                      space=sweep_space.build(sweep_space.load(space) if space else None),
                      evals=evals, eval_chars=eval_chars, val_frac=val_frac, seed=seed,
                      prune=prune, storage=storage, study=study,
                      data_dir=str(data_dir) if data_dir else None)
    con = _console()
    say = (lambda kind, **f: None) if quiet else functools.partial(_sweep_line, con)
    stop = _stop_flag()
    try:
        if jobs == 1:
            status = sweeps.run(sw, stop.is_set, say)
            code = EXIT_INTERRUPTED if status == "interrupted" else 0
        else:
            sweeps.open_study(sw)  # created once, settings checked once, before the workers
            code = sweeps.run_workers(_worker_command(sw, space, quiet), jobs, stop.is_set, say)
    finally:
        stop.restore()
    if not quiet:
        _sweep_summary(con, sweeps.results(sw.sweep_dir, storage, sw.study), sw)
    if code:
        raise typer.Exit(code)


def _worker_command(sw, space, quiet):
    cmd = [sys.executable, "-m", "charrnn", "sweep", sw.corpus, "--trials", str(sw.trials),
           "--minutes", repr(sw.minutes), "--steps", str(sw.steps), "-o", str(sw.sweep_dir),
           "--evals", str(sw.evals), "--eval-chars", str(sw.eval_chars),
           "--val-frac", repr(sw.val_frac), "--seed", str(sw.seed),
           "--prune" if sw.prune else "--no-prune", "--study", sw.study_name, "--jobs", "1"]
    for flag, value in (("--space", space), ("--storage", sw.storage),
                        ("--data-dir", sw.data_dir)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + (["-q"] if quiet else [])


def _params_text(params):
    return " ".join(f"{k}={_short_value(v)}" for k, v in params.items())


def _short_value(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _minutes(s):
    return "-" if s is None else f"{int(s) // 60}:{int(s) % 60:02d}"


def _chars(n):
    if n is None:
        return "-"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


def _sweep_line(con, kind, **f):
    t = f"charrnn: trial {f['trial']}" if "trial" in f else "charrnn:"
    if kind == "start":
        con.print(f"{t}: {_params_text(f['params'])} -> {f['run_dir']}")
    elif kind == "eval":
        con.print(f"{t}: step {f['step']} ({f['progress']:.0%})  val {_fmt(f['val'])}")
    elif kind in ("complete", "pruned", "interrupted"):
        how = {"complete": "complete", "pruned": f"pruned at {f.get('progress', 0):.0%}",
               "interrupted": "interrupted; its checkpoint is kept"}[kind]
        con.print(f"{t}: {how}, best val {_fmt(f['best_val'])} ({_chars(f['chars'])} "
                  f"characters in {_minutes(f['seconds'])})")
    elif kind == "failed":
        con.print(f"{t}: failed: {f['error']}")
    elif kind == "workers":
        con.print(f"{t} {f['jobs']} workers, {f['threads']} thread(s) each")
    elif kind == "worker-died":
        con.print(f"{t} worker {f['pid']} was killed (signal {f['signal']}); starting another")


def _sweep_summary(con, res, sw):
    states = [r["state"] for r in res["trials"]]
    done = sum(s in ("complete", "pruned", "failed") for s in states)
    parts = [f"{states.count(s)} {s}" for s in ("complete", "pruned", "failed", "interrupted",
                                                 "running") if s in states]
    line = (f"charrnn: study {res['study']}: {done} of {sw.trials} trials finished"
            f"{' (' + ', '.join(parts) + ')' if parts else ''}")
    if res["best"]:
        b = res["best"]
        line += (f"; best: trial {b['number']}, val {_fmt(b['value'])}: charrnn sample -c "
                 f"{_rel(b['run_dir'])}")
    con.print(line + f"; the table: charrnn sweep --show {sw.sweep_dir}")


def _rel(path):
    if path is None:
        return "-"
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    except ValueError:
        return path


def _sweep_table(res):
    """The --show table: one row per trial, then the best run."""
    names = list(dict.fromkeys(k for r in res["trials"] for k in r["params"]))
    hosts = {r["host"] for r in res["trials"]}
    head = ["trial", "state", *names, "best val", "chars", "time", "run"]
    rows = [[str(r["number"]), r["state"], *(_short_value(r["params"].get(k, "-")) for k in names),
             _fmt(r["best_val"]), _chars(r["chars"]), _minutes(r["seconds"]),
             (f"{r['host']}:" if len(hosts) > 1 else "") + _rel(r["run_dir"])]
            for r in res["trials"]]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    left = {1, len(head) - 1} | {2 + i for i, k in enumerate(names) if k in ("cell", "schedule")}
    lines = ["  ".join(x.ljust(w) if i in left else x.rjust(w)
                       for i, (x, w) in enumerate(zip(row, widths))).rstrip()
             for row in [head, *rows]]
    lines += [f"trial {r['number']} failed: {r['error']}" for r in res["trials"]
              if r["error"] and r["state"] == "failed"]
    b = res["best"]
    lines.append(f"best: trial {b['number']}, val {_fmt(b['value'])}, {_rel(b['run_dir'])}"
                 if b else "best: none yet (no complete trial)")
    return lines


# ---------------------------------------------------------------------------------------------
# inspect

@app.command()
@user_errors
def inspect(
    file: Annotated[str, typer.Argument(help="The text to read, as one stream from the zero "
                                             "state: a file or '-' for stdin.")],
    checkpoint: CkptOpt = None,
    unit: Annotated[Optional[str], Opt(help="Show the text coloured by one unit, LAYER:UNIT "
                                            "counted from 0 (e.g. 1:37): blue for positive, "
                                            "red for negative.")] = None,
    state: Annotated[str, Opt(help="With --unit: h (hidden state), c (lstm cell state, "
                                   "coloured on its own range) or a gate: i f g o (lstm), r z n "
                                   "(gru).")] = "h",
    html: Annotated[Optional[Path], Opt("--html", help="With --unit: write the coloured text "
                                        "to this standalone HTML page instead.")] = None,
    find: Annotated[Optional[str], Opt(help="Rank units (h, and the lstm's c) by |Pearson r| "
                                            "with a per-character feature: string, comment, "
                                            "quote, brackets, line-position, indent, or "
                                            "re:PATTERN.")] = None,
    regex: Annotated[Optional[str], Opt(help="Same as --find 're:PATTERN': inside any match "
                                             "of this regular expression.")] = None,
    top: Annotated[int, Opt(help="How many units --find lists.")] = 10,
    gates: Annotated[bool, Opt("--gates", help="How often each gate unit is saturated: below "
                                               "0.1 (left) or above 0.9 (right).")] = False,
    png: Annotated[Optional[Path], Opt("--png", help="With --gates: draw the saturation of "
                                       "every unit to this PNG (needs matplotlib: pip install "
                                       "'charrnn[plot]').")] = None,
    drop_unknown: Annotated[bool, Opt(help="Drop characters the model never saw instead of "
                                           "failing.")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
):
    """Look inside a model: which units track what along a text."""
    find, layer, j = _inspect_request(unit, find, regex, gates, html, png, top)
    from .text import data
    from .inspect import probe
    model = _load(checkpoint)
    if unit is not None:
        probe.check_unit(model, layer, j, state)
    text, desc = data.read_text(file, byte_level=model.byte_level)
    ids = probe.encode(model, text, "drop" if drop_unknown else "error")
    chars = probe.step_chars(model, ids)
    accs = {}
    if find is not None:
        accs["find"] = probe.Correlate(model, probe.feature(find, chars))
    if gates:
        accs["gates"] = probe.Saturate(model)
    if unit is not None:
        accs["unit"] = probe.Trace(model, len(ids), layer, j, state)
    with compile_notice():
        probe.warmup(model.config.cell, model.dtype)
    probe.run(model, ids, *accs.values())
    cfg = model.config
    out = {"file": desc, "chars": len(ids),
           "model": f"{cfg.cell} {cfg.num_layers}x{cfg.hidden_size}"}
    if find is not None:
        out["find"] = {"feature": find, "mean": accs["find"].mean,
                       "units": probe.rank(accs["find"].result(), top)}
    if gates:
        out["gates"] = accs["gates"].summary()
        if png is not None:
            _saturation_png(accs["gates"], png, out["model"], file, len(ids))
    shown = None
    if unit is not None:
        out["unit"], shown = _unit_view(model, ids, accs["unit"].values, layer, j, state, desc,
                                        html)
    if as_json:
        print(json.dumps(out))
        return
    _inspect_print(out, shown if html is None else None, state)


def _inspect_request(unit, find, regex, gates, html, png, top):
    """inspect's options checked (usage errors exit 2): (the feature or None, layer, unit)."""
    from .inspect import probe
    from .errors import ConfigError
    if find is not None and regex is not None:
        fail("give --find or --regex, not both", 2)
    if regex is not None:
        find = "re:" + regex
    if unit is None and find is None and not gates:
        fail("nothing to show: give --unit L:J, --find FEATURE or --gates", 2)
    if html is not None and unit is None:
        fail("--html draws a unit: add --unit L:J", 2)
    if png is not None and not gates:
        fail("--png draws the gate saturation: add --gates", 2)
    if top < 1:
        fail("--top must be at least 1", 2)
    if find is not None:
        try:
            probe.check_feature(find)
        except ConfigError as e:
            fail(f"--find: {e}", 2)
    layer = j = None
    if unit is not None:
        try:
            layer, j = (int(x) for x in unit.split(":"))
        except ValueError:
            fail(f"--unit must be LAYER:UNIT, e.g. 1:37, not {unit!r}", 2)
    return find, layer, j


def _saturation_png(saturate, png, model_name, file, n):
    from .inspect import view as probe_view
    name = "stdin" if file == "-" else Path(file).name
    probe_view.saturation_png(saturate.fractions(), png, f"{model_name}, {name} ({n:,} chars)")
    sys.stderr.write(f"charrnn: wrote {png}\n")


def _unit_view(model, ids, values, layer, j, state, desc, html):
    """(inspect's "unit" result, the text's pieces as shown); writes the HTML page if asked."""
    from .inspect import view as probe_view
    title = probe_view.describe_unit(layer, j, state, model.config.cell) + f" on {desc}"
    shown = probe_view.pieces(model, ids)
    if html is not None:
        try:
            html.write_text(probe_view.html_page(shown, values, state, title), encoding="utf-8")
        except OSError as e:
            fail(f"cannot write {html}: {e.strerror or e}")
        sys.stderr.write(f"charrnn: wrote {html}\n")
    return {"layer": layer, "unit": j, "state": state, "title": title, "text": "".join(shown),
            "values": values.tolist()}, shown


def _inspect_print(out, shown, kind):
    """The human-readable forms of inspect's results, on stdout."""
    from rich.console import Console
    from rich.text import Text
    from .inspect.probe import GATE_TITLES
    from .inspect.view import colours, visible
    if "find" in out:
        f = out["find"]
        sys.stderr.write(f"charrnn: {out['model']} on {out['file']}: units by |r| with "
                         f"{f['feature']} (h: hidden state, c: cell state)\n")
        print(f"{'rank':>4}  {'unit':>7}  state  {'r':>7}")
        for k, u in enumerate(f["units"], 1):
            print(f"{k:>4}  {u['layer']:>3}:{u['unit']:<3}  {u['state']:^5}  {u['r']:>+7.3f}")
    if "gates" in out:
        if "find" in out:
            print()
        print(f"{'layer':>5}  {'gate':<16} {'left':>6} {'right':>6}  {'mostly left':>11}  "
              f"{'mostly right':>12}  {'rarely':>6}")
        for g in out["gates"]:
            name = f"{g['gate']} ({GATE_TITLES[g['gate']]})"
            print(f"{g['layer']:>5}  {name:<16} {g['left']:>6.3f} {g['right']:>6.3f}  "
                  f"{g['mostly_left']:>11.1%}  {g['mostly_right']:>12.1%}  {g['rarely']:>6.1%}")
        sys.stderr.write("charrnn: left/right: mean fraction of steps below 0.1 / above 0.9; "
                         "mostly: units saturated on over half the steps; rarely: units "
                         "saturated on under a tenth\n")
    if shown is not None:
        u = out["unit"]
        if "find" in out or "gates" in out:
            print()
        sys.stderr.write(f"charrnn: {u['title']}: blue positive, red negative\n")
        con = Console(highlight=False, soft_wrap=True)  # plain text when not a terminal
        text = Text()
        for piece, (bg, dark) in zip(shown, colours(u["values"], kind)):
            text.append(visible(piece), style=f"{'#ffffff' if dark else '#000000'} on {bg}")
        con.print(text, end="" if u["text"].endswith("\n") else "\n")


class _Stderr:
    """stderr that outlives its reader: when the pipe it writes to closes (`charrnn train 2>&1 |
    head -1`), the descriptor is pointed at /dev/null and the run goes on, checkpoints and all;
    only the messages stop."""

    def __init__(self, stream):
        self._stream, self.gone = stream, False

    def _call(self, name, *args):
        if self.gone:
            return None
        try:
            return getattr(self._stream, name)(*args)
        except BrokenPipeError:
            self.gone = True
            _to_devnull(self._stream)
            return None

    def write(self, text):
        self._call("write", text)
        return len(text)

    def flush(self):
        self._call("flush")

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main():
    """The console script. Exits without the interpreter's teardown: everything worth keeping
    is flushed or fsynced by then, and tearing down Numba's compiled state took a quarter of a
    second, a third of `charrnn sample`'s whole start-up budget."""
    code = 0
    sys.stderr = _Stderr(sys.stderr)
    try:
        app()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            sys.stderr.write(f"{e.code}\n")
    except BrokenPipeError:
        _quiet_broken_pipe()
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        _quiet_broken_pipe()
    try:
        sys.stderr.flush()
    except (ValueError, OSError):
        pass
    os._exit(code)
