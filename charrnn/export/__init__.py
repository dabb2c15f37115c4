"""Export a model to run elsewhere: an ONNX graph (onnxgraph.py) or one self-contained HTML page
that writes in the browser (page.py). `write` checks the options and the output path and writes
the file atomically; the command line is a thin call to it."""

from pathlib import Path
from typing import NamedTuple

from ..errors import CharrnnError, UsageError
from ..fsutil import atomic_write

FORMATS = ("onnx", "html")
PRECISIONS = ("fp32", "fp16")
# fp32 by default: the page then writes the very text `charrnn sample` writes; fp16 halves the
# page (a 2 x 512 LSTM's weights: 13 MB -> 6.6 MB before base64) at a small cost in loss.
DEFAULT_PRECISION = "fp32"


class Written(NamedTuple):
    # fmt: off
    path: Path
    size: int        # bytes written
    precision: str   # of the weights in the file
    # fmt: on


def check_options(fmt, precision=None, sequence=False):
    """The weights' precision for these options, or UsageError naming the bad one."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}: choose onnx or html")
    if precision is not None and precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: choose fp32 or fp16")
    if fmt == "onnx" and precision == "fp16":
        raise UsageError("ONNX export writes fp32 weights; --precision fp16 is for --format html")
    if sequence and fmt != "onnx":
        raise UsageError("--sequence is for --format onnx (a page samples one step at a time)")
    return precision or DEFAULT_PRECISION


def check_output(out, fmt="onnx"):
    """out as a Path, or CharrnnError when no file can be written there."""
    out = Path(out)
    if out.is_dir():
        example = out / ("model.onnx" if fmt == "onnx" else "writer.html")
        raise CharrnnError(f"{out} is a directory: give the file to write, e.g. {example}")
    if not out.parent.is_dir():
        raise CharrnnError(f"cannot write {out}: no directory {out.parent}")
    return out


def render(model, fmt, precision=None, sequence=False):
    """The exported file's content, bytes."""
    precision = check_options(fmt, precision, sequence)
    if fmt == "onnx":
        from . import onnxgraph

        return onnxgraph.to_bytes(model, sequence)
    from . import page

    return page.render(model, precision).encode("utf-8")


def write(model, fmt, out, precision=None, sequence=False):
    """Export model (a CharModel) as fmt to the file out, atomically: nothing half-written is
    left behind, and an existing file is replaced only once the new one is complete."""
    precision = check_options(fmt, precision, sequence)
    out = check_output(out, fmt)
    data = render(model, fmt, precision, sequence)
    try:
        with atomic_write(out) as f:
            f.write(data)
    except OSError as e:
        raise CharrnnError(f"cannot write {out}: {e.strerror or e}") from None
    return Written(out, len(data), precision)
