"""Sampling: the whole per-character loop runs in one jitted call per chunk of characters.

Randomness comes in as uniforms ("coins") drawn up front from the caller's seeded generator, so a
seed gives the same text whatever the chunk sizes.
"""
import math
import time

import numpy as np
from numba import njit, prange

from . import kernels as K, threads
from .kernels import kernel

# Across the cores: a batch-1 step of a wide LSTM is bound by reading its weights (12 MB a
# character at 2 x 512, about 28 GB/s from one core here), so two cores each read half.
parallel_kernel = njit(cache=True, error_model="numpy", nogil=True, parallel=True)
PARALLEL_MIN_HIDDEN = 256  # below this the weights sit in a core's cache and one core is faster
PROBE_MIN, PROBE_EVERY = 32, 4096  # time the split path on 32 chars of a piece, every 4k chars
PROBE_PIECE = 256  # a long request runs in pieces of this many characters, each on the faster path


@kernel
def step(cell, p, ids, h, c, G, R, aux):
    """Advance every layer of state (h, c) (L, N, H) by one character per row: ids (N,)."""
    for l in range(h.shape[0]):
        if l == 0:
            K.embed(p, ids, G)
        else:
            np.dot(h[l - 1], p.Wx[l - 1], G)
            G += p.b[l]
        K.cell_step(cell, p, l, G, (R, h[l], c[l], h[l], c[l], aux), None)


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


@parallel_kernel
def lstm_layer_par(xb, h_prev, c, Whb, h_out, acc, tc):
    """One batch-1 LSTM layer step, split by units into Whb.shape[0] chunks run in parallel.
    Whb (k, H, 4n): chunk k's columns, gates i f g o of its n units; xb (k, 4n) the input
    projection plus bias in the same layout; c (k, n) updated in place, h_out (k, n) the new h;
    each chunk is then the usual lstm_step on a (1, 4n) row."""
    for k in prange(Whb.shape[0]):
        np.dot(h_prev, Whb[k], acc[k])
        acc[k] += xb[k]
        K.lstm_step(acc[k:k + 1], c[k:k + 1], c[k:k + 1], tc[k:k + 1], h_out[k:k + 1])


@parallel_kernel
def proj_par(h, Wb, bb, out):
    """out[k] = h @ Wb[k] + bb[k] for each chunk k, in parallel."""
    for k in prange(Wb.shape[0]):
        np.dot(h, Wb[k], out[k])
        out[k] += bb[k]


@kernel
def step_par(blocks, x, h, c, t, xp, acc, tc):
    """Advance the batch-1 state h (L, H), c (L, k, n) by the character x, chunked across
    cores; t and tc (k, n) scratch."""
    Wx0b, Wxb, Whb, bb = blocks
    for k in range(Whb.shape[1]):
        xp[k] = Wx0b[k, x] + bb[0, k]
    for l in range(h.shape[0]):
        if l > 0:
            proj_par(h[l - 1], Wxb[l - 1], bb[l], xp)
        lstm_layer_par(xp, h[l], c[l], Whb[l], t, acc, tc)
        h[l] = t.reshape(h.shape[1])


@kernel
def generate_par(blocks, Wy, by, h, c, pending, cur, coins, temp, top_k, top_p, banned, out, t,
                 xp, acc, tc, logits, prob):
    """generate() for one row of a wide LSTM, each step split across the cores."""
    for s in range(pending.shape[0]):
        step_par(blocks, pending[s, 0], h, c, t, xp, acc, tc)
    L = h.shape[0]
    for s in range(out.shape[0]):
        step_par(blocks, cur[0], h, c, t, xp, acc, tc)
        np.dot(h[L - 1], Wy, logits)
        logits += by
        nxt = pick(logits, coins[s, 0], temp, top_k, top_p, banned, prob)
        out[s, 0] = nxt
        cur[0] = nxt


def cores_idle():
    """Whether this process has a core to itself beside the one it runs on, now: the kernel's
    count of runnable threads (the 4th field of /proc/loadavg, the caller included), the least
    of three looks 1 ms apart (a busy process is runnable at every look; a passing one is not).
    Unlike the load averages it does not lag by a minute. False where it cannot be read."""
    try:
        runnable = 1 << 30
        for _ in range(3):
            with open("/proc/loadavg") as f:
                runnable = min(runnable, int(f.read().split()[3].split("/")[0]))
            time.sleep(0.001)
    except (OSError, ValueError, IndexError):
        return False
    return runnable < threads.num_threads()


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
        default) for a wide LSTM and one row, when timing says it pays (see generate)."""
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
        H = cfg.hidden_size
        k = math.gcd(H, threads.num_threads())  # chunks of units: as many as cores, dividing H
        self.forced = parallel is True
        if parallel is None:
            parallel = (model.cell == K.LSTM and num_samples == 1 and k > 1
                        and H >= PARALLEL_MIN_HIDDEN)
        self.blocks = None
        if parallel:  # the weights once more, laid out by chunk of units (see lstm_layer_par)
            p = model.params
            L = cfg.num_layers
            self.blocks = (unit_blocks(p.Wx0, k),
                           np.stack([unit_blocks(p.Wx[l], k) for l in range(L - 1)])
                           if L > 1 else np.zeros((0, k, H, Kg // k), dt),
                           np.stack([unit_blocks(p.Wh[l], k) for l in range(L)]),
                           np.stack([unit_blocks(p.b[l], k) for l in range(L)]))
            self.t = np.zeros((k, H // k), dt)
            self.tc = np.zeros((k, H // k), dt)
            self.xp = np.zeros((k, Kg // k), dt)
            self.acc = np.zeros((k, Kg // k), dt)
        self.rate = {False: None, True: None}  # chars/s of each path, last time they were timed
        self.since_probe, self.every = PROBE_EVERY, PROBE_EVERY  # the first long chunk times

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
        if self.blocks is None or self.forced:
            self._run(self.forced, coins, out, *args)
        else:  # pieces, so that a long request can switch paths after timing them
            for at in range(0, n, PROBE_PIECE):
                part = slice(at, min(n, at + PROBE_PIECE))
                self._choose_and_run(coins[part], out[part], args)
        return out

    def _choose_and_run(self, coins, out, args):
        n = len(out)
        if n >= 2 * PROBE_MIN + 8 and self.since_probe >= self.every and cores_idle():
            # Time both paths on PROBE_MIN characters each, then finish the piece on the faster.
            # They give the same text, but on a machine whose cores are busy elsewhere the split
            # one waits at every step and can be a hundred times slower (measured beside a
            # training run); so it is tried only when no other thread is runnable, and while it
            # loses, less and less often. The first time, a few characters go through it
            # untimed: its first call starts the thread pool and would lose the race for that.
            warm = 8 if self.rate[True] is None else 0
            if warm:
                self._run(True, coins[:warm], out[:warm], *args)
            at = warm
            for parallel in (False, True):
                part = slice(at, at + PROBE_MIN)
                t0 = time.perf_counter()
                self._run(parallel, coins[part], out[part], *args)
                self.rate[parallel] = PROBE_MIN / (time.perf_counter() - t0)
                at += PROBE_MIN
            wins = self.rate[True] > self.rate[False]
            self.since_probe, self.every = 0, PROBE_EVERY if wins else min(16 * PROBE_EVERY,
                                                                           2 * self.every)
            if at < n:
                self._run(wins, coins[at:], out[at:], *args)
        else:
            self._run(self.rate[True] is not None and self.rate[True] > self.rate[False],
                      coins, out, *args)
            self.since_probe += n

    def _run(self, parallel, coins, out, temp, top_k, top_p, banned):
        if parallel:
            p = self.model.params
            L, k, n = len(self.h), *self.t.shape
            generate_par(self.blocks, p.Wy, p.by, self.h[:, 0], self.c[:, 0].reshape(L, k, n),
                         self.pending, self.cur, coins, temp, top_k, top_p, banned, out, self.t,
                         self.xp, self.acc, self.tc, self.logits[0], self.prob)
        else:
            generate(self.model.cell, self.model.params, self.h, self.c, self.pending, self.cur,
                     coins, temp, top_k, top_p, banned, out, self.G, self.R, self.aux,
                     self.logits, self.prob)
        self.pending = self.pending[:0]
