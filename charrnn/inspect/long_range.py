"""The long-range memory task: how far back a cell can learn to remember. A synthetic corpus of
episodes `symbol, k fillers, marker, symbol`, a model trained on them one episode a window, the
greedy answer's accuracy, and the gradient profile of the answer's loss alone, read from the
norms the backward kernel records (Work.gn).

benchmarks/long_range.py runs it over cells and lags (its docstring explains the task; the table
is in docs/benchmarks.md); tests/inspect/test_long_range.py checks the profile against finite
differences. It lives in the package because its measurement reads the engine's buffers, which
change with the engine."""

import time
from typing import NamedTuple

import numpy as np

from ..engine import kernels
from ..engine.model import Model, ModelConfig
from ..engine.optim import Adam


class TrainArgs(NamedTuple):
    """What train() reads: the benchmark's options of the same names, with its defaults."""

    # fmt: off
    budget: int = 2000       # Adam steps
    hidden: int = 64         # hidden units (one layer)
    symbols: str = "abcd"    # the alphabet of the remembered symbol
    batch: int = 32          # episodes per training step
    lr: float = 1e-2         # Adam learning rate
    grad_clip: float = 5.0   # global gradient-norm clip
    seeds: tuple = (1, 2, 3)
    # fmt: on


FILLER, MARKER = ".", "="


# -- the task -----------------------------------------------------------------------------------


def vocabulary(symbols):
    return symbols + FILLER + MARKER


def episodes(rng, n, k, num_symbols):
    """n episodes as ids (n, k + 3): symbol, k fillers, marker, symbol. Symbol ids are
    0..num_symbols-1; the filler is num_symbols and the marker num_symbols + 1."""
    ids = np.full((n, k + 3), num_symbols, np.int32)
    sym = rng.integers(0, num_symbols, n)
    ids[:, 0] = sym
    ids[:, k + 1] = num_symbols + 1
    ids[:, k + 2] = sym
    return ids


def window(eps):
    """Time-major (x, y), each (T, B) with T = k + 2, of a batch of episodes (B, k + 3)."""
    x = np.ascontiguousarray(eps[:, :-1].T)
    y = np.ascontiguousarray(eps[:, 1:].T)
    return x, y


def data_rng(seed, k, purpose):
    """Independent streams per (seed, k): 0 trains, 1 evaluates, 2 probes gradients. The cell is
    not part of the key, so every cell sees the same episodes."""
    return np.random.default_rng(np.random.SeedSequence([seed, k, purpose]))


# -- measurements -------------------------------------------------------------------------------


def new_model(cell, hidden, symbols, seed, dtype=np.float32):
    vocab = vocabulary(symbols)
    cfg = ModelConfig(cell=cell, layers=1, hidden=hidden, vocab_size=len(vocab))
    return Model(cfg, dtype=dtype).init_weights(np.random.default_rng(seed))


def last_step_profile(model, x, y, h0=None, c0=None):
    """gn (L, T): ||d L_last / d h_t|| for every layer and step, where L_last is the mean loss of
    the window's last step only. The dlogits of every earlier step are zeroed before backward."""
    T, B = x.shape
    if h0 is None:
        h0, c0 = model.zero_state(B)
    w = model.forward(x, h0, c0, norms=True)  # buffers with room for the norms (Work.gn)
    kernels.xent(w.P, y.reshape(-1), True, B)
    w.P[: (T - 1) * B] = 0
    _, grads = model.zeros_like_params()
    dh0, dc0 = model.zero_state(B)
    kernels.pack_backward(model.params, w, 0, 1)  # the signature training compiled
    kernels.backward(model.window_cell, model.params, x, w, grads, dh0, dc0)
    return w.gn.copy()


def lag_ratios(gn0, lags):
    """{lag: ||dL/dh_{T-1-lag}|| / ||dL/dh_{T-1}||} for the lags that fit the window."""
    T = gn0.shape[0]
    return {lag: float(gn0[T - 1 - lag] / gn0[T - 1]) for lag in lags if lag <= T - 1}


def answer_accuracy(model, eps, batch=500):
    """Fraction of episodes whose answer is the argmax of the logits at the marker step, and the
    mean loss (nats) of the answer."""
    hits, loss = 0, 0.0
    for s in range(0, len(eps), batch):
        x, y = window(eps[s : s + batch])
        T, B = x.shape
        h0, c0 = model.zero_state(B)
        P = model.forward(x, h0, c0).P[(T - 1) * B :]  # (B, V) logits at the marker step
        hits += int((P.argmax(axis=1) == y[-1]).sum())
        loss += kernels.xent(P.copy(), y[-1], False, 0)
    return hits / len(eps), loss / len(eps)


def train(model, k, seed, args):
    """--budget Adam steps on batches of fresh episodes; returns (mean loss of the last 10% of
    steps, seconds)."""
    rng = data_rng(seed, k, 0)
    opt = Adam(model.flat, lr=args.lr, grad_clip=args.grad_clip)
    grad_flat, grads = model.zeros_like_params()
    h0, c0 = model.zero_state(args.batch)
    tail, losses = max(1, args.budget // 10), []
    start = time.perf_counter()
    for step in range(args.budget):
        x, y = window(episodes(rng, args.batch, k, len(args.symbols)))
        loss, _ = model.loss_and_grad(x, y, h0, c0, grads)
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss {loss} at step {step + 1}")
        opt.step(model.flat, grad_flat)
        losses.append(loss)
    return float(np.mean(losses[-tail:])), time.perf_counter() - start
