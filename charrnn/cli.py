"""The command line. stdout carries only the product (sampled text, a requested number or JSON);
progress, notices and errors go to stderr. Exit codes: 0 success, 1 a user-facing error,
2 a usage error, 130 interrupted.

Heavy modules (NumPy, Numba) are imported inside the commands, so `--help` and `--version` are
instant and `sample` pays only for what it uses.
"""
import functools
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import CharrnnError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Train character-level recurrent language models and sample text from them.")

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


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
        except CharrnnError as e:
            fail(str(e))
        except KeyboardInterrupt:
            sys.stderr.write("charrnn: interrupted\n")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except MemoryError:
            fail("out of memory; try a smaller --batch, --seq or --hidden")
    return wrapper


class compile_notice:
    """Says on stderr that Numba is compiling when warming up takes longer than a moment
    (the first run after install); silent when the cache is warm."""

    def __init__(self, quiet=False, delay=0.8):
        self.quiet, self.delay = quiet, delay

    def __enter__(self):
        msg = "charrnn: compiling kernels (first run only; cached for next time)...\n"
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


# ---------------------------------------------------------------------------------------------
# train

Opt = typer.Option


@app.command()
@user_errors
def train(
    ctx: typer.Context,
    corpus: Annotated[Optional[str], typer.Argument(
        help="Training text: a file, a directory of text files, '-' for stdin, or a corpus name "
             "such as 'tinyshakespeare'. Default: this Python's standard library source.")] = None,
    out: Annotated[Optional[Path], Opt("--out", "-o", help="Run directory for checkpoints and "
                                       "metrics. Default: runs/<corpus>-<date>-<time>.")] = None,
    cell: Annotated[str, Opt(help="Recurrent cell: lstm, gru or rnn.")] = "lstm",
    layers: Annotated[int, Opt(help="Number of stacked recurrent layers.")] = 2,
    hidden: Annotated[Optional[int], Opt(
        show_default=False, help="Units per layer. Default: sized to the budget, 512 for "
                                 "--minutes 10 or more, 384 for 5 or more, otherwise 256.")] = None,
    dropout: Annotated[Optional[float], Opt(
        show_default=False, help="Dropout between layers and before the decoder. Default: 0.2 "
                                 "with the 512 preset, 0.1 with 384, otherwise 0.")] = None,
    batch: Annotated[int, Opt(help="Parallel streams per step (batch size).")] = 64,
    seq: Annotated[int, Opt(help="Characters per step and stream (BPTT window).")] = 100,
    lr: Annotated[float, Opt(help="Adam learning rate (peak).")] = 3e-3,
    grad_clip: Annotated[float, Opt(help="Clip the global gradient norm (0: off).")] = 5.0,
    schedule: Annotated[str, Opt(help="Learning-rate schedule: constant or cosine (decays over "
                                      "the --steps/--minutes/--epochs budget).")] = "cosine",
    warmup: Annotated[int, Opt(help="Linear learning-rate warm-up steps.")] = 0,
    lr_decay: Annotated[float, Opt(help="constant schedule: multiply lr by this each epoch "
                                        "after --lr-decay-after epochs.")] = 1.0,
    lr_decay_after: Annotated[int, Opt(help="Epochs before --lr-decay applies.")] = 10,
    weight_decay: Annotated[float, Opt(help="Decoupled weight decay.")] = 0.0,
    steps: Annotated[int, Opt(help="Stop after this many optimizer steps (0: no limit).")] = 0,
    minutes: Annotated[float, Opt(help="Stop after this much training time (0: no limit).")] = 0.0,
    epochs: Annotated[float, Opt(help="Stop after this many passes over the text (0: no limit; "
                                      "10 when no budget is given).")] = 0.0,
    val_frac: Annotated[float, Opt(help="Fraction at the end of the text held out for "
                                        "validation.")] = 0.1,
    eval_every: Annotated[int, Opt(help="Steps between evaluations and checkpoints.")] = 200,
    eval_chars: Annotated[int, Opt(help="Validation characters read per evaluation, ten times "
                                        "as many at the last one (0: all).")] = 120_000,
    keep: Annotated[int, Opt(help="Also keep the last N step-stamped checkpoints.")] = 0,
    patience: Annotated[int, Opt(help="Stop after N evaluations without improvement "
                                      "(0: never).")] = 0,
    seed: Annotated[int, Opt(help="Random seed.")] = 1,
    state_reset: Annotated[int, Opt(help="Reset each stream's carried state at random, on "
                                         "average every this many characters (0: never), so "
                                         "the model can start from a zero state as sampling "
                                         "does.")] = 2000,
    log_grad_norms: Annotated[bool, Opt(help="At each evaluation, show how the gradient "
                                        "|dL/dh_t| of the first layer changes across the window "
                                        "(vanishing or exploding).")] = False,
    resume: Annotated[Optional[Path], Opt(help="Continue the run in this directory exactly "
                                          "where it stopped.")] = None,
    init_from: Annotated[Optional[Path], Opt(help="Start from a trained checkpoint's weights "
                                             "(fine-tuning).")] = None,
    byte_level: Annotated[bool, Opt("--bytes", help="Model raw bytes instead of Unicode "
                                    "characters.")] = False,
    max_vocab: Annotated[Optional[int], Opt(help="Keep the N most frequent characters; the rest "
                                            "become one unknown symbol.")] = None,
    glob: Annotated[Optional[str], Opt(help="With a directory CORPUS: only files matching this "
                                       "pattern, e.g. '*.py'.")] = None,
    data_dir: Annotated[Optional[Path], Opt(envvar="CHARRNN_DATA_DIR", help="Where named corpora "
                                            "are looked for and downloaded to.")] = None,
    float64: Annotated[bool, Opt("--float64", help="Train in float64 (slow; for checks).")] = False,
    threads: Annotated[Optional[int], Opt(
        envvar="CHARRNN_THREADS", show_default=False,
        help="Cores to train on. Default: all this process may use.")] = None,
    force: Annotated[bool, Opt(help="Train into a run directory that holds a run, or is "
                                    "locked.")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No progress output.")] = False,
):
    """Train a model on a text and write checkpoints to the run directory."""
    import numpy as np
    from . import api, run
    _use_threads(threads)
    from .trainer import TrainConfig

    names = dict(cell=cell, num_layers=layers, hidden_size=hidden, dropout=dropout,
                 batch_size=batch, seq_len=seq, lr=lr, grad_clip=grad_clip, schedule=schedule,
                 warmup=warmup, lr_decay=lr_decay, lr_decay_after=lr_decay_after,
                 weight_decay=weight_decay, steps=steps, minutes=minutes, epochs=epochs,
                 val_frac=val_frac, eval_every=eval_every, eval_chars=eval_chars, keep=keep,
                 patience=patience, seed=seed, log_grad_norms=log_grad_norms,
                 state_reset=state_reset)
    given = {p for p in ctx.params if ctx.get_parameter_source(p).name != "DEFAULT"}
    if resume is not None:  # only options the user actually gave may differ from the run's
        names = {k: v for k, v in names.items() if _flag_of(k) in given}
    elif init_from is not None:  # the model's shape comes from the checkpoint unless given
        names = {k: v for k, v in names.items()
                 if k not in ("cell", "num_layers", "hidden_size") or _flag_of(k) in given}
    dtype = np.float64 if float64 else np.float32
    trainer = run.prepare(corpus, out, resume=resume, init_from=init_from, data_dir=data_dir,
                          glob=glob, byte_level=byte_level, max_vocab=max_vocab, force=force,
                          dtype=dtype, **names)
    con = _console()
    m, cfg = trainer.model, trainer.cfg
    if getattr(trainer, "notice", None) and not quiet:
        con.print(f"charrnn: {trainer.notice}")
    if not quiet:
        con.print(f"charrnn: {m.config.cell} {m.config.num_layers}x{m.config.hidden_size}, "
                  f"{m.flat.size:,} parameters, vocabulary {m.config.vocab_size}, "
                  f"{trainer.xs.size:,} training characters, run directory {trainer.run_dir}")
    with compile_notice(quiet):
        api.warmup(m.config.cell, dtype)
    stop = _stop_flag()
    try:
        with run.run_directory(trainer.run_dir, force=force), \
                _Progress(con, trainer, quiet) as prog:
            status = trainer.run(prog.update, stop.is_set)
    finally:
        stop.restore()
    _summary(con, trainer, status, quiet)
    if status == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)


def _use_threads(n):
    """--threads (or CHARRNN_THREADS, which Typer reads into it): one setting for the run."""
    if n is not None:
        if n < 1:
            fail("--threads (or CHARRNN_THREADS) must be at least 1", 2)
        from . import threads as threads_mod
        threads_mod.configure(n)


def _flag_of(field):
    return {"num_layers": "layers", "hidden_size": "hidden", "batch_size": "batch",
            "seq_len": "seq"}.get(field, field)


def _stop_flag():
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
        sys.stderr.write("\ncharrnn: stopping after this step and saving (Ctrl-C again to "
                         "abandon it)\n")
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
    """A live Rich bar when stderr is a terminal; plain lines per evaluation otherwise."""

    def __init__(self, con, trainer, quiet):
        self.con, self.trainer, self.quiet = con, trainer, quiet
        self.live = not quiet and con.is_terminal

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
        line = (f"step {e['step']:>6}  epoch {e['epoch']:7.3f}  train {_fmt(e['train_loss'])}  "
                f"val {_fmt(e['val_loss'])}{' *' if e['best'] else '  '}  "
                f"{e['chars_per_sec']:,.0f} chars/s  left {_eta(e['eta'])}")
        if self.quiet:
            return
        if "grad_norms" in e:
            g = e["grad_norms"]
            last = g[-1] or 1.0
            picks = sorted({len(g) - 1 - k for k in (0, 1, 2, 5, 10, 20, 50, 100) if k < len(g)},
                           reverse=True)
            line += "\n  |dL/dh_t| / |dL/dh_T-1|: " + "  ".join(
                f"t=T-{len(g) - 1 - t}:{g[t] / last:.3g}" for t in picks)
        if self.live:
            self.bar.update(self.task, completed=self.trainer.progress(), stats=line)
            self.bar.console.print(line)
        else:
            self.con.print(line)

    def __exit__(self, *exc):
        if self.live:
            self.bar.stop()


def _summary(con, t, status, quiet):
    if quiet:
        return
    how = {"done": "finished", "patience": "stopped early (no improvement)",
           "interrupted": "interrupted"}[status]
    best = f"best val {_fmt(t.best_val)} at step {t.best_step}" if t.best_step else "no evaluation"
    rate = t.chars_seen / t.elapsed if t.elapsed > 0 else 0
    con.print(f"charrnn: {how} at step {t.step} after {t.elapsed:.0f}s; {best}; "
              f"{rate:,.0f} chars/s overall; checkpoints in {t.run_dir}")


# ---------------------------------------------------------------------------------------------
# sample, eval, info

CkptOpt = Annotated[Optional[Path], Opt(
    "--checkpoint", "-c", help="A checkpoint file or run directory. Default: the best checkpoint "
                               "of the most recently written run under ./runs/.")]


def _read_prime(prime, prime_file):
    if prime is not None and prime_file is not None:
        fail("give --prime or --prime-file, not both", 2)
    if prime_file is not None:
        try:
            return prime_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            fail(f"cannot read --prime-file {prime_file}: {getattr(e, 'strerror', None) or e}")
    if prime == "-":
        return sys.stdin.read()
    return prime or ""


def _check_sampling(temp, top_k, top_p, length, num_samples):
    if not temp >= 0 or temp != temp or temp == float("inf"):
        fail("--temp must be 0 (greedy) or a positive number", 2)
    if top_k < 0:
        fail("--top-k must be 0 (off) or positive", 2)
    if not 0 < top_p <= 1:
        fail("--top-p must be in (0, 1]", 2)
    if length < 0:
        fail("--length must be 0 (endless) or positive", 2)
    if num_samples < 1:
        fail("--num-samples must be at least 1", 2)
    if num_samples > 1 and length == 0:  # samples are written when all are done: never
        fail("--num-samples above 1 needs a --length", 2)


class _Out:
    """Writes text to stdout as it comes; a reader that went away ends generation quietly."""

    def __init__(self, keep=False):
        self.stream = sys.stdout
        self.keep, self.written = keep, ""  # keep a copy only when asked (-n 0 is endless)

    def write(self, s):
        self.stream.write(s)
        self.stream.flush()
        if self.keep:
            self.written += s


def _quiet_broken_pipe():
    """The reader closed the pipe: silence stdout so interpreter shutdown does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
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
    novelty: Annotated[bool, Opt(help="Afterwards, report on stderr which fraction of the "
                                      "sample's n-grams occur verbatim in the training text.")] = False,
    data_dir: Annotated[Optional[Path], Opt(envvar="CHARRNN_DATA_DIR", help="Where named corpora "
                                            "are looked for (for --novelty).")] = None,
    threads: Annotated[Optional[int], Opt(
        envvar="CHARRNN_THREADS", show_default=False,
        help="Cores to sample on. Default: one. More split each step of a wide LSTM's single "
             "sample across them: faster on idle cores, far slower beside other busy work.")] = None,
):
    """Generate text from a trained model; only the text goes to stdout."""
    _use_threads(threads)
    _check_sampling(temp, top_k, top_p, length, num_samples)
    text = _read_prime(prime, prime_file)
    from . import api
    model = api.load(checkpoint)
    with compile_notice():
        api.warmup(model.config.cell, model.dtype, sampling=True)
    unknown = "drop" if drop_unknown else "error"
    gen = model.generate(length, temp, text, seed, top_k, top_p, num_samples, unknown=unknown)
    stop = _unescape(stop) if stop else None
    out = _Out(keep=novelty)
    try:
        if num_samples == 1:
            out.write(text)
            _stream_one(model, gen, stop, out)
        else:
            _write_batch(model, gen, num_samples, text, stop, _unescape(separator), out)
    except BrokenPipeError:
        _quiet_broken_pipe()
        return
    if novelty:
        _report_novelty(model, out.written[len(text):], data_dir)


def _report_novelty(model, sample, data_dir):
    from . import data
    from .novelty import copied_fraction
    info = model.meta.get("info", {})
    source = info.get("source")
    if source == "-":
        fail("--novelty needs the training text, but this model was trained on stdin")
    corpus, _ = data.read_text(source, data_dir=data_dir, glob=info.get("glob"),
                               byte_level=bool(info.get("bytes")))
    if isinstance(corpus, bytes):
        corpus = corpus.decode("utf-8", "replace")
    parts = [f"{n}-grams {100 * f:.1f}%" for n, f in copied_fraction(sample, corpus).items()]
    sys.stderr.write("charrnn: copied verbatim from the training text: "
                     + (", ".join(parts) or "sample too short") + "\n")


def _unescape(s):
    if "\\" not in s:
        return s
    return s.encode("latin-1", "backslashreplace").decode("unicode_escape")


def _stream_one(model, gen, stop, out):
    decode = model.decoder()
    held = ""  # text that might be the start of the stop string
    for ids in gen:
        held += decode(ids[:, 0])
        if stop:
            cut = held.find(stop)
            if cut >= 0:
                out.write(held[:cut + len(stop)])
                return
            keep = len(stop) - 1
            ready, held = (held[:-keep], held[-keep:]) if keep else (held, "")
            out.write(ready)
        else:
            out.write(held)
            held = ""
    out.write(held)


def _write_batch(model, gen, n, prime, stop, sep, out):
    decoders = [model.decoder() for _ in range(n)]
    texts = ["" for _ in range(n)]
    for ids in gen:
        for k in range(n):
            texts[k] += decoders[k](ids[:, k])
        if stop and all(stop in t for t in texts):
            break
    if stop:
        texts = [t[:t.find(stop) + len(stop)] if stop in t else t for t in texts]
    out.write(sep.join(prime + t for t in texts))


@app.command("eval")
@user_errors
def evaluate(
    file: Annotated[str, typer.Argument(help="The text to score: a file, '-' for stdin, or a "
                                             "corpus name.")],
    checkpoint: CkptOpt = None,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
    data_dir: Annotated[Optional[Path], Opt(envvar="CHARRNN_DATA_DIR", help="Where named corpora "
                                            "are looked for.")] = None,
):
    """Print the model's loss on a text in nats and bits per character."""
    import math
    from . import api, data
    model = api.load(checkpoint)
    text, desc = data.read_text(file, data_dir=data_dir, byte_level=model.byte_level)
    with compile_notice():
        api.warmup(model.config.cell, model.dtype)
    nats = model.loss(text)
    n = len(text)
    if as_json:
        print(json.dumps({"file": desc, "chars": n, "nats_per_char": nats,
                          "bits_per_char": nats / math.log(2)}))
    else:
        print(f"{nats:.4f} nats/char  {nats / math.log(2):.4f} bits/char  ({n:,} characters)")


@app.command()
@user_errors
def info(
    checkpoint: Annotated[Optional[Path], typer.Argument(
        help="A checkpoint file or run directory (default: the latest run).")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
):
    """Show a checkpoint's model, vocabulary and training history."""
    from . import api, checkpoint as ck
    path = ck.resolve(checkpoint)
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
    from . import plot as plotting
    if x not in ("elapsed", "chars"):
        fail("--x must be elapsed or chars", 2)
    rows = plotting.read_metrics(run_dir)
    for line in plotting.text_chart(rows, x):
        print(line)
    if png is not None:
        plotting.png(rows, png)
        sys.stderr.write(f"charrnn: wrote {png}\n")


def main():
    """The console script. Exits without the interpreter's teardown: everything worth keeping
    is flushed or fsynced by then, and tearing down Numba's compiled state took a quarter of a
    second, a third of `charrnn sample`'s whole start-up budget."""
    code = 0
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
