"""The command line: one module per command group, the options and exit codes they share in
common.py, and the commands registered here. stdout carries only the product (sampled text, a
requested number or JSON); progress, notices and errors go to stderr. Exit codes (common.py):
0 success, 1 a user-facing error, 2 a usage error, 130 interrupted.

Heavy modules (NumPy, Numba) are imported inside the commands, so `--help` and `--version` are
instant and `sample` pays only for what it uses. Nothing in the library imports this package.
"""

import os
import sys
from typing import Annotated, Optional

import typer

from .. import __version__
from . import evaluate, export, inspect, runs, sample, serve, sweep, train
from .common import Stderr, plain_usage, quiet_broken_pipe

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Train character-level recurrent language models and sample text from them.",
)


def _version(value: bool):
    if value:
        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
):
    """charrnn: character-level LSTM/GRU/RNN language models with hand-written Numba kernels."""
    from ..engine.threads import preload_blas

    preload_blas()  # before Numba first initialises: 0.2 s of every command's start-up


app.command()(train.train)
app.command()(sample.sample)
app.command("eval")(evaluate.evaluate)
app.command()(evaluate.info)
app.command()(runs.plot)
app.command("runs")(runs.list_runs)
app.add_typer(runs.cache)
app.add_typer(sweep.sweep)
app.command()(inspect.inspect)
app.command()(serve.serve)
app.command()(export.export)
plain_usage(app)


def main():
    """The console script. Exits without the interpreter's teardown: everything worth keeping
    is flushed or fsynced by then, and tearing down Numba's compiled state took a quarter of a
    second, a third of `charrnn sample`'s whole start-up budget."""
    code = 0
    sys.stderr = Stderr(sys.stderr)
    try:
        app()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            sys.stderr.write(f"{e.code}\n")
    except BrokenPipeError:
        quiet_broken_pipe()
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        quiet_broken_pipe()
    try:
        sys.stderr.flush()
    except (ValueError, OSError):
        pass
    os._exit(code)
