"""Sampling: the whole per-character loop runs in one jitted call per chunk of characters.

Randomness comes in as uniforms ("coins") drawn up front from the caller's seeded generator, so a
seed gives the same text whatever the chunk sizes.
"""
import numpy as np

from . import kernels as K, threads
from .kernels import kernel


@kernel
def step(cell, p, ids, h, c, G, R, aux):
    """Advance every layer of state (h, c) (L, N, H) by one character per row: ids (N,)."""
    for l in range(h.shape[0]):
        if l == 0:
            K.embed(p, ids, G)
        else:
            np.dot(h[l - 1], p.Wx[l - 1], G)
            G += p.b[l]
        K.cell_step(cell, p, l, G, (R, h[l], c[l], h[l], c[l], aux))


@kernel
def feed(cell, p, ids, h, c, G, R, aux):
    """Run the characters ids (n, N) through the state, discarding predictions."""
    for s in range(ids.shape[0]):
        step(cell, p, ids[s], h, c, G, R, aux)


@kernel
def pick(row, coin, temp, top_k, top_p, banned, prob):
    """Draw one id from logits row (V,) with temperature, top-k and nucleus (top-p) filtering;
    temp 0 is greedy. banned (an id, or -1) is never drawn. prob (V,) float64 scratch."""
    V = row.shape[0]
    best, bv = 0, -np.inf
    for v in range(V):
        if v != banned and row[v] > bv:
            best, bv = v, row[v]
    if temp <= 0:
        return best
    for v in range(V):
        prob[v] = 0.0 if v == banned else np.exp((float(row[v]) - float(bv)) / temp)
    if 0 < top_k < V:
        thr = np.sort(prob)[V - top_k]
        for v in range(V):
            if prob[v] < thr:
                prob[v] = 0.0
    if top_p < 1.0:
        order = np.argsort(-prob)
        target = top_p * prob.sum()
        acc = 0.0
        thr = 0.0
        for v in order:
            acc += prob[v]
            if acc >= target:
                thr = prob[v]
                break
        for v in range(V):
            if prob[v] < thr:
                prob[v] = 0.0
    u = coin * prob.sum()
    acc = 0.0
    for v in range(V):
        acc += prob[v]
        if acc > u and prob[v] > 0:
            return v
    return best


@kernel
def generate(cell, p, h, c, pending, cur, coins, temp, top_k, top_p, banned, out, G, R, aux,
             logits, prob):
    """Feed the characters pending (m, N) (a prime not yet seen; m may be 0), then sample
    out.shape[0] characters for each of N rows: cur (N,) is the last character seen (updated);
    coins (n, N) uniforms in [0, 1); out (n, N) receives ids. One kernel for both, so a
    command loads one function from Numba's cache, not two."""
    feed(cell, p, pending, h, c, G, R, aux)
    L = h.shape[0]
    for s in range(out.shape[0]):
        step(cell, p, cur, h, c, G, R, aux)
        np.dot(h[L - 1], p.Wy, logits)
        logits += p.by
        for k in range(cur.shape[0]):
            nxt = pick(logits[k], coins[s, k], temp, top_k, top_p, banned, prob)
            out[s, k] = nxt
            cur[k] = nxt


class Sampler:
    """Stateful generation from a Model for N rows at once (N independent samples)."""

    def __init__(self, model, num_samples=1):
        # Products of a few rows: a second BLAS thread costs more in waking and spinning than it
        # saves, and on a busy machine far more.
        threads.set_blas_threads(1)
        cfg = model.config
        self.model, self.N = model, num_samples
        Kg = model.params.Wh.shape[2]
        dt = model.dtype
        self.h, self.c = model.zero_state(num_samples)
        self.G = np.zeros((num_samples, Kg), dt)
        self.R = np.zeros((num_samples, Kg), dt)
        self.aux = np.zeros((num_samples, cfg.hidden_size), dt)
        self.logits = np.zeros((num_samples, cfg.vocab_size), dt)
        self.prob = np.zeros(cfg.vocab_size, np.float64)
        self.cur = np.zeros(num_samples, np.int64)
        self.pending = np.zeros((0, num_samples), np.int64)  # prime characters not yet fed

    def prime(self, ids):
        """Warm the state on ids (a 1-d sequence); the last one is the next input."""
        ids = np.asarray(ids, np.int64)
        self.pending = np.ascontiguousarray(np.repeat(ids[:-1, None], self.N, axis=1))
        self.cur[:] = ids[-1]

    def generate(self, n, rng, temp=1.0, top_k=0, top_p=1.0, banned=-1):
        """The next n ids of each row, shape (n, N)."""
        coins = rng.random((n, self.N))
        out = np.zeros((n, self.N), np.int64)
        generate(self.model.cell, self.model.params, self.h, self.c, self.pending, self.cur, coins,
                 float(temp), int(top_k), float(top_p), int(banned), out, self.G, self.R, self.aux,
                 self.logits, self.prob)
        self.pending = self.pending[:0]
        return out
