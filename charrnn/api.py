"""The library interface for scripts and notebooks:

import charrnn
model = charrnn.load("runs/shakespeare")      # a checkpoint file or a run directory
print(model.sample(200, temp=0.8, prime="ROMEO:", seed=1))
print(model.loss(open("some.txt").read()))    # nats per character
charrnn.train("input.txt", out="runs/mine", minutes=2)
"""

import math
from typing import NamedTuple, Optional

import numpy as np

from . import checkpoint, warm  # noqa: F401  (warm: the sampler's split path compiles apart)
from .charmodel import CharModel, model_from_checkpoint  # noqa: F401  (the façade's names)
from .config import ModelConfig
from .errors import CorpusError, UsageError
from .engine.model import num_params
from .training import discovery


def load(path=None, dtype=np.float32):
    """Load a model from a checkpoint file or run directory (default: the latest run)."""
    return model_from_checkpoint(discovery.resolve(path), dtype)[0]


def describe(meta):
    """A dict summarising a checkpoint's Meta for `charrnn info`."""
    cfg, pr, hist = meta.model, meta.progress, meta.history
    vals = [h.val_loss for h in hist if h.val_loss is not None and math.isfinite(h.val_loss)]
    return {
        "cell": cfg.cell,
        "layers": cfg.layers,
        "hidden": cfg.hidden,
        "vocab_size": cfg.vocab_size,
        "dropout": cfg.dropout,
        "params": num_params(cfg),
        "vocab_kind": meta.vocab.kind,
        "step": pr and pr.step,
        # what the file's weights (and its scores) are: --ema's average or the trained ones
        "weights": "averaged" if meta.train and meta.train.ema else "trained",
        "epoch": hist[-1].epoch if hist else pr.epoch if pr else 0,  # fractional
        "elapsed_seconds": pr and pr.elapsed,
        "chars_seen": pr and pr.chars_seen,
        "val_loss": meta.val_loss,
        "val_loss_full": meta.val_loss_full,
        "val_chars_full": meta.val_chars_full,
        "best_val_loss": min(vals) if vals else None,
        # the training text's character frequencies on the validation sample (add-one smoothed)
        "unigram_val_loss": pr and pr.unigram,
        "evaluations": len(hist),
        "corpus": meta.info.corpus,
        "init_from": meta.info.init_from,  # the checkpoint its weights started from, or None
        "charrnn_version": meta.charrnn,
        "train": meta.train.to_dict() if meta.train else {},
        "history": [dict(h) for h in hist],
    }


class Evaluation(NamedTuple):
    score: object  # engine.model.Score: the static loss, characters, streams, unknown ones
    dynamic_nats: Optional[float] = None  # with dynamic: the dynamic-evaluation loss


class TooManyUnknown(CorpusError):
    """A text with more than max_unknown of characters read as the unknown symbol; its score
    is there for the caller to report."""

    def __init__(self, message, score):
        super().__init__(message)
        self.score = score


def check_evaluation(max_unknown=0.05, dynamic_lr=0.003):
    """UsageError for an evaluation option no evaluation can use, in the command line's words."""
    if not 0 <= max_unknown <= 1:
        raise UsageError("--max-unknown must be in [0, 1]")
    if not 0 <= dynamic_lr < math.inf:
        raise UsageError("--dynamic-lr must be 0 or a positive number")


def evaluate(model, text, exact=False, drop_unknown=False, max_unknown=0.05, dynamic=False, dynamic_lr=0.003):
    """`charrnn eval`'s figures of a text: an Evaluation. Characters the model does not know
    are an error (drop_unknown: left out; a --max-vocab model reads them as its unknown symbol,
    and more than max_unknown of them is TooManyUnknown). exact: one stream (CharModel.score);
    dynamic: also the dynamic-evaluation loss with SGD steps of dynamic_lr (engine/dynamic.py),
    on the text read as the static score read it."""
    check_evaluation(max_unknown, dynamic_lr)
    unknown = "drop" if drop_unknown else "unk" if model.vocab.unk_id >= 0 else "error"
    try:
        score = model.score(text, exact=exact, unknown=unknown)
    except CorpusError as e:
        if drop_unknown or "not in the vocabulary" not in str(e):
            raise
        raise CorpusError(f"{e}; pass --drop-unknown to leave them out") from None
    if score.unknown_share > max_unknown:
        raise TooManyUnknown(unknown_refusal(score), score)
    if not dynamic:
        return Evaluation(score)
    from .engine.dynamic import dynamic_score

    return Evaluation(score, dynamic_score(model, model.encode(text, unknown=unknown), lr=dynamic_lr).nats)


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


def compile_kernels(cell="lstm", dtype=np.float32, sampling=False, precision="fp32"):
    """Compile (or load from Numba's cache) the kernels a command needs, on a tiny model:
    the compiled code depends only on dtypes and array ranks, not on sizes. precision: the
    sampling kernels of that weight format (engine/precision.py)."""
    cfg = ModelConfig(cell=cell, layers=2, hidden=2, vocab_size=2)
    m = CharModel(cfg, "ab", dtype=dtype)
    if sampling:
        from .engine.sampler import Sampler

        # the serial path only: a wide LSTM's split path is loaded on a thread of its own once
        # a sample has run long enough to want it (engine/switch.py)
        s = Sampler(m, 1, parallel=False, precision=precision)
        s.prime(np.array([0, 1]))
        s.generate(1, np.random.default_rng(0))
        return
    from .engine.optim import Adam

    x = np.zeros((1, 1), np.int32)  # windows are int32 whatever the ids' storage type
    gflat, grads = m.zeros_like_params()
    m.loss_and_grad(x, x, *m.zero_state(1), grads)  # dropout masks take the same kernel
    Adam(m.flat).step(m.flat, gflat)
    m.evaluate(np.array([0, 1, 0], np.uint8), 1, 1)
