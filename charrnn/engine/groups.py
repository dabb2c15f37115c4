"""The compile groups: what each named group of kernels runs, once, on a tiny model, so that
Numba compiles it (or loads it from its cache). Their code depends on dtypes and array ranks,
not sizes. warm.py decides when and where each group compiles (which process, which core)."""

import numpy as np

from ..config import ModelConfig
from . import bgemm, kernels, sampler, threads
from .model import Model


def _tiny(cell, dtype, hidden=2):
    return Model(ModelConfig(cell=cell, layers=2, hidden=hidden, vocab_size=3), dtype=dtype)


def _window(m, T=1, B=2):
    x = np.zeros((T, B), np.int32)  # windows are int32 whatever the ids' storage type
    return x, *m.zero_state(B)


def forward(cell, dtype, precision):
    """A window's forward pass and loss (evaluation, and training's first half)."""
    m = _tiny(cell, dtype)
    x, h, c = _window(m)
    m.window_loss(x, x, h, c)
    m.forward(x, h, c)
    kernels.xent(m.forward(x, h, c).P, x.reshape(-1), True, x.size)


def evaluate(cell, dtype, precision):
    """Scoring a text (what evaluations and `charrnn eval` call beside the forward pass)."""
    m = _tiny(cell, dtype)
    for ids in (np.array([0, 1, 0, 2], np.uint8), np.array([0, 1, 0, 2], np.uint16)):
        m.score_ids(ids, 1, 2)
        m.score_ids(ids, 1, 2, exact=True)


def backward(cell, dtype, precision):
    """A window's backward pass, as each of Model.loss_and_grad's parts calls it, and the
    merge of the parts' gradients."""
    m = _tiny(cell, dtype)
    x, h, c = _window(m)
    w = m.work(x.shape[0], x.shape[1], False, 0)
    _, grads = m.zeros_like_params()
    dh, dc = m.zero_state(x.shape[1])
    kernels.backward(m.window_cell, m.params, x, w, grads, dh, dc)
    m._merge(grads, 2)


def _bf16_window(cell, dtype):
    """(model, x, h, c, Work) of a tiny window with bf16 products, its weights packed; None
    where this CPU cannot run them (train --precision bf16 is refused there)."""
    if not bgemm.available() or np.dtype(dtype) != np.float32:
        return None
    m = _tiny(cell, dtype, hidden=bgemm.NR)
    x, h, c = _window(m)
    w = m.work(x.shape[0], x.shape[1], False, 0, False, "bf16")
    kernels.pack_weights(m.params, w, True, 0, 1)
    return m, x, h, c, w


def forward_bf16(cell, dtype, precision):
    """A window's forward pass with bf16 products (`train --precision bf16`; the sampling
    precision is not this group's)."""
    window = _bf16_window(cell, dtype)
    if window is not None:
        m, x, h, c, w = window
        kernels.forward(m.window_cell, m.params, x, h, c, w, True)


def backward_bf16(cell, dtype, precision):
    """A window's backward pass with bf16 products."""
    window = _bf16_window(cell, dtype)
    if window is not None:
        m, x, h, c, w = window
        _, grads = m.zeros_like_params()
        dh, dc = m.zero_state(x.shape[1])
        kernels.backward(m.window_cell, m.params, x, w, grads, dh, dc)


def optimizer(cell, dtype, precision):
    """Adam's step, and the dropout masks of the regularisers."""
    from .model import dropout_masks
    from .optim import Adam

    m = _tiny(cell, dtype)
    gflat, _ = m.zeros_like_params()
    Adam(m.flat).step(m.flat, gflat)
    dropout_masks(np.random.default_rng(0), (2, 1, 2, 2), 0.5, m.dtype)


def sample(cell, dtype, precision):
    """Sampling one row or several, on one core (the serial path)."""
    m = _tiny(cell, dtype)
    s = sampler.Sampler(m, 1, parallel=False, precision=precision)
    s.prime(np.array([0, 1]))
    s.generate(1, np.random.default_rng(0))


def split(cell, dtype, precision):
    """Sampling one row of an LSTM on two cores (the split path, engine/sampler.py)."""
    if cell != "lstm" or threads.num_threads() < 2:
        return
    m = _tiny(cell, dtype, hidden=2 * threads.num_threads())
    s = sampler.Sampler(m, 1, parallel=False, precision=precision)
    s.prime(np.array([0, 1]))
    s.generate(1, np.random.default_rng(0))
    s.load_split()


GROUPS = {
    f.__name__: f
    for f in (forward, evaluate, backward, optimizer, sample, split, forward_bf16, backward_bf16)
}
