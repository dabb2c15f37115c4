"""charrnn export (issue 24): the thin command; the logic is the library's, charrnn/export/."""

import sys
from pathlib import Path
from typing import Annotated

from .common import CheckpointOpt, Opt, load, user_errors


@user_errors
def export(
    checkpoint: CheckpointOpt = None,
    format: Annotated[
        str,
        Opt(
            "--format",
            "-f",
            help="onnx: a graph of one sampling step "
            "(ONNX Runtime and others); html: one "
            "self-contained page that writes in the "
            "browser.",
        ),
    ] = "onnx",
    output: Annotated[Path, Opt("--output", "-o", help="The file to write (atomically).")] = ...,
    precision: Annotated[
        str,
        Opt(
            help="The weights' format in the file: fp32 (the page writes the same text as "
            "`charrnn sample`) or fp16 (half the size; --format html only).",
        ),
    ] = "fp32",  # export.DEFAULT_PRECISION (tests/cli/test_cli.py checks they agree)
    sequence: Annotated[
        bool,
        Opt(
            help="ONNX: a graph scoring a whole sequence (ONNX's LSTM/GRU/RNN operators; for an lnlstm, a "
            "Scan over its step) instead of one step."
        ),
    ] = False,
):
    """Export a model to run without charrnn: an ONNX graph, or an HTML page that writes."""
    from .. import export as ex  # here, so that other commands' start-up does not pay for it

    ex.check_options(format, precision, sequence)  # before loading: a bad option fails at once
    ex.check_output(output, format)
    done = ex.write(load(checkpoint), format, output, precision, sequence)
    sys.stderr.write(
        f"charrnn: wrote {done.path} ({done.size / 1e6:.2f} MB, {format}, {done.precision} weights)\n"
    )
