"""Sampling: the whole per-character loop runs in one jitted call per chunk of characters.

Randomness comes in as uniforms ("coins") drawn up front from the caller's seeded generator, so a
seed gives the same text whatever the chunk sizes.

The products go through weights packed once per Sampler (gemm.py, padded to whole strips), not
through BLAS: a batch-1 step is bound by reading the weights, which packed strips stream in
order, and `charrnn sample` loads no BLAS library at all.

By default sampling runs on one core. Asked for more threads (--threads or CHARRNN_THREADS), a
wide LSTM splits each step's units into one chunk per core, with the weights laid out by chunk
(a batch-1 step of a 2 x 512 LSTM reads 12 MB of weights; two cores each read half). That path
meets its threads three times per layer and character, so it is fast only while every core is
free: beside a training run it waited a hundred times longer than the serial path.
"""
import math

import numpy as np
from numba import njit, prange

from . import gemm, kernels as K, threads
from .kernels import kernel

parallel_kernel = njit(cache=True, error_model="numpy", nogil=True, parallel=True)
PARALLEL_MIN_HIDDEN = 256  # below this the weights sit in a core's cache and one core is faster


@kernel
def product(A, Wp, out, scratch):
    """out (N, M) = A (N, Kd) @ W through Wp = W packed and padded to scratch's width."""
    if scratch.shape[1] == out.shape[1]:
        gemm.matmul(A, Wp, out)
    else:
        gemm.matmul(A, Wp, scratch)
        out[:] = scratch[:, :out.shape[1]]


@kernel
def step(cell, p, packed, ids, h, c, G, R, aux, scratch):
    """Advance every layer of state (h, c) (L, N, H) by one character per row: ids (N,).
    packed: (Wx, Wh) of every layer, packed (see pack_model)."""
    Wxp, Whp = packed
    for l in range(h.shape[0]):
        if l == 0:
            K.embed(p, ids, G)
        else:
            product(h[l - 1], Wxp[l - 1], G, scratch)
            G += p.b[l]
        product(h[l], Whp[l], R, scratch)
        K.cell_update(cell, p, l, G, (R, h[l], c[l], h[l], c[l], aux))


@kernel
def feed(cell, p, packed, ids, h, c, G, R, aux, scratch):
    """Run the characters ids (n, N) through the state, discarding predictions."""
    for s in range(ids.shape[0]):
        step(cell, p, packed, ids[s], h, c, G, R, aux, scratch)


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
def generate(cell, p, packed, Wyp, h, c, pending, cur, coins, temp, top_k, top_p, banned, out,
             G, R, aux, scratch, logits, prob):
    """Feed the characters pending (m, N) (a prime not yet seen; m may be 0), then sample
    out.shape[0] characters for each of N rows: cur (N,) is the last character seen (updated);
    coins (n, N) uniforms in [0, 1); out (n, N) receives ids. Wyp: the decoder, packed; logits
    (N, padded V). One kernel for both, so a command loads one function from Numba's cache."""
    feed(cell, p, packed, pending, h, c, G, R, aux, scratch)
    L, V = h.shape[0], p.by.shape[0]
    for s in range(out.shape[0]):
        step(cell, p, packed, cur, h, c, G, R, aux, scratch)
        gemm.matmul(h[L - 1], Wyp, logits)
        for k in range(cur.shape[0]):
            row = logits[k, :V]
            row += p.by
            nxt = pick(row, coins[s, k], temp, top_k, top_p, banned, prob)
            out[s, k] = nxt
            cur[k] = nxt


@parallel_kernel
def lstm_layer_par(xb, h_prev, c, Whb, h_out, acc, scratch, tc):
    """One batch-1 LSTM layer step, split by units into Whb.shape[0] chunks run in parallel.
    Whb (k, packed): chunk k's columns, gates i f g o of its n units, packed; xb (k, 4n) the
    input projection plus bias in the same layout; c (k, n) updated in place, h_out (k, n) the
    new h; each chunk is then the usual lstm_step on a (1, 4n) row."""
    for k in prange(Whb.shape[0]):
        product(h_prev, Whb[k], acc[k:k + 1], scratch[k:k + 1])
        acc[k] += xb[k]
        K.lstm_step(acc[k:k + 1], c[k:k + 1], c[k:k + 1], tc[k:k + 1], h_out[k:k + 1])


@parallel_kernel
def proj_par(h, Wb, bb, out, scratch):
    """out[k] = h @ Wb[k] + bb[k] for each chunk k (Wb[k] packed), in parallel."""
    for k in prange(Wb.shape[0]):
        product(h, Wb[k], out[k:k + 1], scratch[k:k + 1])
        out[k] += bb[k]


@kernel
def step_par(blocks, x, h, c, t, xp, acc, scratch, tc):
    """Advance the batch-1 state h (L, 1, H), c (L, k, n) by the character x, chunked across
    cores; t and tc (k, n) scratch."""
    Wx0b, Wxb, Whb, bb = blocks
    for k in range(Whb.shape[1]):
        xp[k] = Wx0b[k, x] + bb[0, k]
    for l in range(h.shape[0]):
        if l > 0:
            proj_par(h[l - 1], Wxb[l - 1], bb[l], xp, scratch)
        lstm_layer_par(xp, h[l], c[l], Whb[l], t, acc, scratch, tc)
        h[l, 0] = t.reshape(h.shape[2])


@kernel
def generate_par(blocks, Wyp, by, h, c, pending, cur, coins, temp, top_k, top_p, banned, out, t,
                 xp, acc, scratch, tc, logits, prob):
    """generate() for one row of a wide LSTM, each step split across the cores."""
    for s in range(pending.shape[0]):
        step_par(blocks, pending[s, 0], h, c, t, xp, acc, scratch, tc)
    L, V = h.shape[0], by.shape[0]
    for s in range(out.shape[0]):
        step_par(blocks, cur[0], h, c, t, xp, acc, scratch, tc)
        gemm.matmul(h[L - 1], Wyp, logits)
        row = logits[0, :V]
        row += by
        nxt = pick(row, coins[s, 0], temp, top_k, top_p, banned, prob)
        out[s, 0] = nxt
        cur[0] = nxt


def padded(dtype, N):
    """N rounded up to whole strips of gemm's packed matrices of this dtype."""
    return gemm.padded(np.zeros(1, dtype), N)


def pack_padded(W):
    """W (Kd, N) packed for gemm.matmul, padded to whole strips."""
    out = np.empty(W.shape[0] * padded(W.dtype, W.shape[1]), W.dtype)
    gemm.pack(W, out)
    return out


def unit_blocks(W, k):
    """(..., 4H) gate columns i f g o -> (k, ..., 4H/k): chunk j holds its H/k units' 4 gates."""
    lead, H = W.shape[:-1], W.shape[-1] // 4
    n = H // k
    b = W.reshape(*lead, 4, k, n)
    b = np.moveaxis(b, -2, 0)  # (k, ..., 4, n)
    return np.ascontiguousarray(b.reshape(k, *lead, 4 * n))


class Sampler:
    """Stateful generation from a Model for N rows at once (N independent samples)."""

    def __init__(self, model, num_samples=1, parallel=None):
        """parallel: split each step across the cores: True always, False never, None (the
        default) for a wide LSTM and one row when more than one thread was asked for
        (threads.explicit)."""
        cfg, p = model.config, model.params
        self.model, self.N = model, num_samples
        L, H, V = cfg.num_layers, cfg.hidden_size, cfg.vocab_size
        Kg = p.Wh.shape[2]
        dt = model.dtype
        self.h, self.c = model.zero_state(num_samples)
        self.G = np.zeros((num_samples, Kg), dt)
        self.R = np.zeros((num_samples, Kg), dt)
        self.aux = np.zeros((num_samples, H), dt)
        self.scratch = np.zeros((num_samples, padded(dt, Kg)), dt)
        self.logits = np.zeros((num_samples, padded(dt, V)), dt)
        self.prob = np.zeros(V, np.float64)
        self.cur = np.zeros(num_samples, np.int64)
        self.pending = np.zeros((0, num_samples), np.int64)  # prime characters not yet fed
        self.Wyp = pack_padded(p.Wy)
        k = math.gcd(H, threads.num_threads())  # chunks of units: as many as cores, dividing H
        if parallel is None:
            parallel = ((threads.explicit() or 1) > 1 and model.cell == K.LSTM
                        and num_samples == 1 and k > 1 and H >= PARALLEL_MIN_HIDDEN)
        self.parallel = bool(parallel)
        if self.parallel:  # the weights once more, laid out by chunk of units, each packed
            n4 = Kg // k
            pk = lambda W: np.stack([pack_padded(W[j]) for j in range(k)])  # noqa: E731
            self.blocks = (unit_blocks(p.Wx0, k),
                           np.stack([pk(unit_blocks(p.Wx[l], k)) for l in range(L - 1)])
                           if L > 1 else np.zeros((0, k, H * padded(dt, n4)), dt),
                           np.stack([pk(unit_blocks(p.Wh[l], k)) for l in range(L)]),
                           np.stack([unit_blocks(p.b[l], k) for l in range(L)]))
            self.t = np.zeros((k, H // k), dt)
            self.tc = np.zeros((k, H // k), dt)
            self.xp = np.zeros((k, n4), dt)
            self.acc = np.zeros((k, n4), dt)
            self.scratch_par = np.zeros((k, padded(dt, n4)), dt)
        else:
            self.packed = (np.stack([pack_padded(p.Wx[l]) for l in range(L - 1)])
                           if L > 1 else np.zeros((0, H * self.scratch.shape[1]), dt),
                           np.stack([pack_padded(p.Wh[l]) for l in range(L)]))

    def prime(self, ids):
        """Warm the state on ids (a 1-d sequence); the last one is the next input."""
        ids = np.asarray(ids, np.int64)
        self.pending = np.ascontiguousarray(np.repeat(ids[:-1, None], self.N, axis=1))
        self.cur[:] = ids[-1]

    def generate(self, n, rng, temp=1.0, top_k=0, top_p=1.0, banned=-1):
        """The next n ids of each row, shape (n, N)."""
        coins = rng.random((n, self.N))
        out = np.zeros((n, self.N), np.int64)
        args = (float(temp), int(top_k), float(top_p), int(banned))
        if self.parallel:
            p = self.model.params
            L, k, n_ = len(self.h), *self.t.shape
            generate_par(self.blocks, self.Wyp, p.by, self.h, self.c[:, 0].reshape(L, k, n_),
                         self.pending, self.cur, coins, *args, out, self.t, self.xp, self.acc,
                         self.scratch_par, self.tc, self.logits, self.prob)
        else:
            generate(self.model.cell, self.model.params, self.packed, self.Wyp, self.h, self.c,
                     self.pending, self.cur, coins, *args, out, self.G, self.R, self.aux,
                     self.scratch, self.logits, self.prob)
        self.pending = self.pending[:0]
        return out
