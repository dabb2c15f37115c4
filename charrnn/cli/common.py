"""What every command shares: the exit codes, the one-line failure, the options several commands
take (declared here once), the stop flag, the checkpoint loader, and stdout and stderr that
outlive their readers."""

import functools
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperArgument, TyperCommand

from ..errors import CharrnnError, UsageError

# exit codes: success, a user-facing error, a usage error (a bad option), interrupted (Ctrl-C)
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def console():
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
MEMORY_HINTS = {
    "train": "try a smaller --batch, --seq or --hidden",
    "sample": "try fewer --num-samples; " + MEMORY_HINT,
    "eval": MEMORY_HINT,
}


def dropped_line(n, what):
    """The stderr line for the characters --drop-unknown left out of a text or a prime."""
    return f"left {n:,} character{'s'[: n != 1]} the model does not know out of the {what}"


class compile_notice:
    """Says on stderr that Numba is compiling when warming up takes longer than a moment
    (the first run after install); silent when the cache is warm and the machine not busy.
    How long a first compile takes: docs/benchmarks.md, "Figures behind the code"."""

    def __init__(self, quiet=False, delay=1.5):
        self.quiet, self.delay = quiet, delay

    def __enter__(self):
        msg = (
            "charrnn: compiling kernels (first run only: 30 s to 2 minutes on 2 cores, "
            "longer when they are busy; cached for next time)...\n"
        )
        self.timer = threading.Timer(self.delay, lambda: sys.stderr.write(msg))
        self.timer.daemon = True
        if not self.quiet:
            self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()


Opt = typer.Option
EncodingOpt = Annotated[
    Optional[str],
    Opt(
        show_default=False,
        help="The text's encoding (any Python codec: latin-1, cp1252, utf-16, "
        "shift_jis, ...). Default: UTF-8, or UTF-16/32 when the text starts "
        "with their byte-order mark.",
    ),
]
ErrorsOpt = Annotated[
    str,
    Opt(
        help="Bytes that do not decode: strict (an error), replace (each "
        "becomes U+FFFD, the unknown symbol) or ignore (dropped); "
        "a count is reported."
    ),
]


# -- options that several commands take, declared once ---------------------------------------

CheckpointOpt = Annotated[
    Optional[Path],
    Opt(
        "--checkpoint",
        "-c",
        help="A checkpoint file, a run directory, or a run's name under the "
        "run root ($CHARRNN_RUNS, else ./runs). Default: the best "
        "checkpoint of the most recently written run there.",
    ),
]
JsonOpt = Annotated[bool, Opt("--json", help="Print JSON instead of text.")]
QuietOpt = Annotated[bool, Opt("--quiet", "-q", help="No progress output.")]
DataDirOpt = Annotated[
    Optional[Path],
    Opt(envvar="CHARRNN_DATA_DIR", help="Where named corpora are looked for and downloaded to."),
]
DropUnknownOpt = Annotated[bool, Opt(help="Leave out characters the model never saw instead of failing.")]


def precision_opt(what):
    """--precision of sample and eval (fp32, bf16 or int8: engine/precision.py); `what` says
    what the command does with the format."""
    return Annotated[str, Opt(help=what)]


def threads_opt(what):
    """--threads, which also reads CHARRNN_THREADS; `what` says what the cores do."""
    return Annotated[Optional[int], Opt(envvar="CHARRNN_THREADS", show_default=False, help=what)]


class Command(TyperCommand):
    """A command whose usage line writes its arguments as the README does: FILE for one it
    needs, [CORPUS] for one it can do without (Typer 0.2x writes {file} and [corpus]); the
    word is the argument's metavar=, else its name in capitals."""

    def collect_usage_pieces(self, ctx):
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if not isinstance(p, TyperArgument):
                pieces += p.get_usage_pieces(ctx)
                continue
            word = (p.metavar or p.name.upper()) + ("..." if p.nargs != 1 else "")
            pieces.append(word if p.required else f"[{word}]")
        return pieces


def plain_usage(app):
    """Every command of app and of its groups (`sweep run`) made a Command; call once all are
    registered."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):  # not a class of the command's own
            info.cls = Command
    for group in app.registered_groups:
        plain_usage(group.typer_instance)


def use_threads(n):
    """--threads (or CHARRNN_THREADS, which Typer reads into it): one setting for the run."""
    if n is not None:
        if n < 1:
            fail("--threads (or CHARRNN_THREADS) must be at least 1", EXIT_USAGE)
        from ..engine import threads as threads_mod

        threads_mod.configure(n)


def stop_flag(announce=True):
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
            sys.stderr.write("\ncharrnn: stopping after this step and saving (Ctrl-C again to abandon it)\n")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return flag


def fmt(x, spec=".4f"):
    return "-" if x is None or x != x else format(x, spec)


def load(checkpoint):
    """The model of -c (see training.discovery.resolve); says on stderr which checkpoint it is
    when the choice was implicit (no -c, a run without best.npz, a directory of runs)."""
    from .. import api
    from ..training import discovery

    path, note = discovery.resolve_explained(checkpoint)
    if note:
        sys.stderr.write(f"charrnn: {note}\n")
    return api.load(path)


def quiet_broken_pipe():
    """The reader closed the pipe: silence stdout so interpreter shutdown does not complain."""
    to_devnull(sys.stdout)


def to_devnull(stream):
    """Point a stream's descriptor at /dev/null (its reader has gone)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):
        pass


def print_table(rows, right=()):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))
        ]
        print("  ".join(cells).rstrip())


class Stderr:
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
            to_devnull(self._stream)
            return None

    def write(self, text):
        self._call("write", text)
        return len(text)

    def flush(self):
        self._call("flush")

    def __getattr__(self, name):
        return getattr(self._stream, name)


def group(name, help, default, moved=(), old_argument=None):
    """A Typer app for a command with subcommands (`cache show`, `cache clear`) that still takes
    the spellings of the single command it was (`cache --clear`, `sweep CORPUS`, `sweep --show
    DIR`), with a note on stderr. Arguments that name no subcommand go to `default`; an old
    option in `moved` ((option, subcommand, takes a value)) becomes its subcommand, with the
    option's value as the subcommand's argument. old_argument: the word for what the old
    spelling took first (`CORPUS`), to say how its spelling moved; None says nothing."""
    from typer.core import TyperGroup

    class Group(TyperGroup):
        def parse_args(self, ctx, args):
            if not args or args[0] not in self.commands and args[0] not in ("--help", "-h"):
                args = _new_spelling(name, list(args), default, moved, old_argument)
            return super().parse_args(ctx, args)

    return typer.Typer(cls=Group, name=name, help=help, add_completion=False, rich_markup_mode=None)


def _new_spelling(name, args, default, moved, old_argument):
    for option, command, takes_value in moved:
        for i, a in enumerate(args):
            if a != option and not (takes_value and a.startswith(option + "=")):
                continue
            rest = args[:i] + args[i + 1 :]
            if not takes_value:
                _note(f"{name} {option}", f"{name} {command}")
                return [command] + rest
            value = a.partition("=")[2] if "=" in a else rest.pop(i) if i < len(rest) else None
            _note(f"{name} {option} ARG", f"{name} {command} ARG")
            return [command] + ([value] if value is not None else []) + rest
    if args and old_argument:
        _note(f"{name} {old_argument}", f"{name} {default} {old_argument}")
    return [default] + args


def _note(old, new):
    sys.stderr.write(
        f"charrnn: note: `charrnn {old}` is now `charrnn {new}`; the old spelling "
        "still works in this release\n"
    )
