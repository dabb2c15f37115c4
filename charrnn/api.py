"""The library interface for scripts and notebooks:

import charrnn
model = charrnn.load("runs/shakespeare")      # a checkpoint file or a run directory
print(model.sample(200, temp=0.8, prime="ROMEO:", seed=1))
print(model.loss(open("some.txt").read()))    # nats per character
charrnn.train("input.txt", out="runs/mine", minutes=2)
"""

import math

import numpy as np

from . import checkpoint, warm  # noqa: F401  (warm: the sampler's split path compiles apart)
from .charmodel import CharModel, model_from_checkpoint  # noqa: F401  (the façade's names)
from .config import ModelConfig
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


def warmup(cell="lstm", dtype=np.float32, sampling=False, precision="fp32"):
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
