"""charrnn eval and charrnn info: a model's loss on a text, and what a checkpoint holds."""

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (
    EXIT_USAGE,
    CheckpointOpt,
    DataDirOpt,
    DropUnknownOpt,
    EncodingOpt,
    ErrorsOpt,
    JsonOpt,
    Opt,
    dropped_line,
    fail,
    fmt,
    load,
    precision_opt,
    user_errors,
)


@user_errors
def evaluate(
    file: Annotated[
        str,
        typer.Argument(metavar="FILE", help="The text to score: a file, '-' for stdin, or a corpus name."),
    ],
    checkpoint: CheckpointOpt = None,
    exact: Annotated[
        bool,
        Opt(
            "--exact",
            help="Read the text as one continuous stream from a "
            "zero state and score every character after "
            "the first (one stream: slower).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    encoding: EncodingOpt = None,
    errors: ErrorsOpt = "strict",
    drop_unknown: DropUnknownOpt = False,
    data_dir: DataDirOpt = None,
    max_unknown: Annotated[
        float,
        Opt(
            help="A --max-vocab model reads the characters it lacks "
            "as its unknown symbol, whose loss is not the known "
            "characters': refuse to score a text with more than "
            "this share of them (the loss over the known "
            "characters is reported apart either way)."
        ),
    ] = 0.05,
    dynamic: Annotated[
        bool,
        Opt(
            "--dynamic",
            help="Also report the dynamic-evaluation loss "
            "(Krause et al. 2018): the text read as one "
            "stream, the weights adapted by one SGD step "
            "on each 100-character segment after it is "
            "scored. A separate number, never the "
            "model's static loss.",
        ),
    ] = False,
    dynamic_lr: Annotated[float, Opt(help="The SGD step of --dynamic.")] = 0.003,
    precision: precision_opt(
        "Score the weights as this format reads them: fp32 (exact), bf16 or int8 (2 or 1 bytes "
        "a weight, as `charrnn sample --precision` uses them): what sampling in that format "
        "costs in loss."
    ) = "fp32",
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
    from .. import api, warm
    from ..text import data
    from .progress import Compiling

    api.check_evaluation(max_unknown, dynamic_lr)
    from ..config import check_precision

    check_precision(precision)
    model = load(checkpoint)
    if precision != "fp32":
        model = model.at_precision(precision)
    decoding = data.Decoding(encoding, errors, hint="")
    text, desc = data.read_text(file, data_dir=data_dir, byte_level=model.byte_level, decoding=decoding)
    if decoding.notice():
        sys.stderr.write(f"charrnn: {decoding.notice()}\n")
    with Compiling() as report:
        warm.prepare("eval", model.config.cell, model.dtype, report=report)
    try:
        result = api.evaluate(model, text, exact, drop_unknown, max_unknown, dynamic, dynamic_lr)
    except api.TooManyUnknown as e:
        _say_dropped(e.score)
        raise
    score, adapted = result
    _say_dropped(score)
    nats, share = score.nats, score.unknown_share
    if as_json:
        d = {
            "file": desc,
            "chars": score.chars,
            "streams": score.streams,
            "exact": exact,
            "precision": precision,
            "nats_per_char": nats,
            "bits_per_char": nats / math.log(2),
            "unknown_chars": score.unknown,
            "dropped_chars": score.dropped,
            "nats_per_char_known": _finite(score.nats_known),
        }
        if dynamic:
            d.update(dynamic_nats_per_char=adapted, dynamic_lr=dynamic_lr)
        print(json.dumps(d))
    else:
        how = "one stream" if score.streams == 1 else f"{score.streams} streams"
        unk = ""
        if score.unknown:
            unk = f"; {score.unknown:,} ({100 * share:.2f}%) unknown to the model, " + (
                f"{score.nats_known:.4f} nats/char over the known ones"
                if math.isfinite(score.nats_known)
                else "none known"
            )
        print(
            f"{nats:.4f} nats/char  {nats / math.log(2):.4f} bits/char  "
            f"({score.chars:,} characters scored, read as {how}{unk}"
            + (f"; weights as {precision}" if precision != "fp32" else "")
            + ")"
        )
        if dynamic:
            print(
                f"{adapted:.4f} nats/char  {adapted / math.log(2):.4f} bits/char  dynamic "
                f"evaluation (one stream, SGD {dynamic_lr:g} after each 100-character "
                "segment; not the static loss)"
            )


def _say_dropped(score):
    if score.dropped:
        sys.stderr.write(f"charrnn: {dropped_line(score.dropped, 'text')}\n")


def _finite(x):
    """x, or None where JSON would need NaN or Infinity."""
    import math

    return x if x is not None and math.isfinite(x) else None


@user_errors
def info(
    checkpoint: Annotated[
        Optional[Path],
        typer.Argument(
            metavar="CKPT", help="A checkpoint file, run directory or run name (default: the latest run)."
        ),
    ] = None,
    checkpoint_opt: CheckpointOpt = None,
    as_json: JsonOpt = False,
):
    """Show a checkpoint's model, vocabulary and training history (the checkpoint given as an
    argument, or with -c as the other commands take it)."""
    from .. import api, checkpoint as ck
    from ..training import discovery

    if checkpoint is not None and checkpoint_opt is not None:
        fail("give the checkpoint as an argument or with -c, not both", EXIT_USAGE)
    path, note = discovery.resolve_explained(checkpoint if checkpoint is not None else checkpoint_opt)
    if note:
        sys.stderr.write(f"charrnn: {note}\n")
    d = api.describe(ck.load(path)[0])
    d["path"] = str(path)
    if as_json:
        print(json.dumps(d))
        return
    print(
        f"{path}: {d['cell']} {d['layers']}x{d['hidden']}, {d['params']:,} parameters, "
        f"vocabulary {d['vocab_size']} ({d['vocab_kind']}), dropout {d['dropout']}"
        + (f", averaged weights (--ema {d['train']['ema']})" if d["weights"] == "averaged" else "")
    )
    print(
        f"trained on {d['corpus']}"
        + (f", starting from {d['init_from']}" if d["init_from"] else "")
        + f": step {d['step']}, epoch {d['epoch']}, "
        f"{d['chars_seen'] or 0:,} characters in {d['elapsed_seconds'] or 0:.0f}s; "
        f"val loss {fmt(d['val_loss'])}, best {fmt(d['best_val_loss'])}"
        + (f" (unigram baseline {fmt(d['unigram_val_loss'])})" if d["unigram_val_loss"] is not None else "")
    )
    if d["val_loss_full"] is not None:
        print(
            f"final larger evaluation, {d['val_chars_full']:,} validation characters: "
            f"{fmt(d['val_loss_full'])}"
        )
    for h in d["history"][-10:]:
        print(
            f"  step {h['step']:>7}  {h['elapsed']:8.1f}s  train {fmt(h['train_loss'])}  "
            f"val {fmt(h['val_loss'])}"
        )
