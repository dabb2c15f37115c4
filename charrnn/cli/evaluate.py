"""charrnn eval and charrnn info: a model's loss on a text, and what a checkpoint holds."""

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import CharrnnError
from .common import (
    EXIT_USAGE,
    CheckpointOpt,
    DataDirOpt,
    DropUnknownOpt,
    EncodingOpt,
    ErrorsOpt,
    JsonOpt,
    Opt,
    console,
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
    from .. import warm
    from ..text import data
    from .progress import Compiling

    if not 0 <= max_unknown <= 1:
        fail("--max-unknown must be in [0, 1]", EXIT_USAGE)
    if not 0 <= dynamic_lr < math.inf:
        fail("--dynamic-lr must be 0 or a positive number", EXIT_USAGE)
    from ..config import check_precision

    check_precision(precision)
    model = load(checkpoint)
    if precision != "fp32":
        model = model.at_precision(precision)
    decoding = data.Decoding(encoding, errors, hint="")
    text, desc = data.read_text(file, data_dir=data_dir, byte_level=model.byte_level, decoding=decoding)
    if decoding.notice():
        sys.stderr.write(f"charrnn: {decoding.notice()}\n")
    with Compiling(console()) as report:
        warm.prepare("eval", model.config.cell, model.dtype, report=report)
    unknown = "drop" if drop_unknown else None
    try:
        score = model.score(text, exact=exact, unknown=unknown)
    except CharrnnError as e:
        if drop_unknown or "not in the vocabulary" not in str(e):
            raise
        fail(f"{e}; pass --drop-unknown to leave them out")
    nats, share = score.nats, score.unknown_share
    if score.dropped:
        sys.stderr.write(f"charrnn: {dropped_line(score.dropped, 'text')}\n")
    if share > max_unknown:
        fail(unknown_refusal(score))
    adapted = None
    if dynamic:
        from ..engine.dynamic import dynamic_score

        ids = model.encode(
            text, unknown="drop" if drop_unknown else "unk" if model.vocab.unk_id >= 0 else "error"
        )
        adapted = dynamic_score(model, ids, lr=dynamic_lr).nats
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


def unknown_refusal(score):
    """Why eval refuses a text with too many characters the model reads as its unknown
    symbol, saying from the figures which way they move the loss."""
    import math

    head = (
        f"{100 * score.unknown_share:.1f}% of the scored characters ({score.unknown:,} of "
        f"{score.chars:,}) are unknown to the model, which reads each as its unknown symbol"
    )
    nats, known = score.nats, score.nats_known
    if not math.isfinite(known):
        body = f": the loss would be {nats:.4f} nats/char, and none of them is known"
    else:
        way = "lower" if nats < known else "higher" if nats > known else "neither lower nor higher"
        body = (
            f" at {score.nats_unknown:.4f} nats each: they make the loss {way}, {nats:.4f} "
            f"nats/char over all against {known:.4f} over the known ones"
        )
    share = min(1.0, math.ceil(score.unknown_share * 100) / 100)
    return f"{head}{body}; pass --max-unknown {share} to score it anyway"


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
