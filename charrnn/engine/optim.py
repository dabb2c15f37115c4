"""Adam with global-norm gradient clipping, over the model's flat parameter buffer, on the
threads a run uses (threads.py): each thread takes a contiguous share of the buffer."""

import math

import numpy as np

from . import threads
from .kernels import kernel, like

NORM_BLOCK = 1 << 15  # elements per partial sum of the gradient's norm: fixed, so the norm,
# and the clipping it decides, do not depend on how many threads share the work


@kernel
def sq(x):
    """x squared in float64 (Numba's float() of a float32 stays a float32)."""
    y = np.float64(x)
    return y * y


@kernel
def block_squares(g, out, b0, b1):
    """out[b] = the sum of g's squares over block b (NORM_BLOCK elements), b0 <= b < b1, in
    float64, in eight interleaved sums (one sum's chain of additions ran at a quarter of the
    speed of reading g)."""
    n = g.size
    for b in range(max(b0, 0), b1):
        lo, hi = b * NORM_BLOCK, min(n, (b + 1) * NORM_BLOCK)
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        i = lo
        while i + 8 <= hi:
            s0 += sq(g[i])
            s1 += sq(g[i + 1])
            s2 += sq(g[i + 2])
            s3 += sq(g[i + 3])
            s4 += sq(g[i + 4])
            s5 += sq(g[i + 5])
            s6 += sq(g[i + 6])
            s7 += sq(g[i + 7])
            i += 8
        while i < hi:
            s0 += sq(g[i])
            i += 1
        out[b] = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@kernel
def adam_apply(w, g, m, v, scale, step, eps_hat, decay, beta1, beta2):
    """The Adam update of w (any slice of the buffers: the arrays are one thread's share), the
    gradient scaled by scale (clipping) and the weights by decay (decoupled weight decay);
    zeroes g. (A loop over a run-time range of whole buffers ran 1.5x slower.)"""
    x = w[0]
    one, b1, b2 = like(x, 1.0), like(x, beta1), like(x, beta2)
    sc, st, eh, dec = like(x, scale), like(x, step), like(x, eps_hat), like(x, decay)
    for i in range(w.size):
        gi = g[i] * sc
        m[i] = b1 * m[i] + (one - b1) * gi
        v[i] = b2 * v[i] + (one - b2) * gi * gi
        w[i] = w[i] * dec - st * m[i] / (np.sqrt(v[i]) + eh)
        g[i] = 0


def on_threads(fn, n, least, align=1):
    """fn(lo, hi) for each thread's share of range(n), side by side: shares of at least
    `least` items (a small buffer is not worth a hand-off), bounds multiples of align."""
    k = max(1, min(threads.num_threads(), n // least))
    bounds = [n * i // k // align * align for i in range(k)] + [n]
    threads.side_by_side(lambda i: fn(bounds[i], bounds[i + 1]), k)


class Adam:
    """Adam state mirroring the flat parameter buffer (the moments are flat arrays too)."""

    def __init__(self, flat, lr=3e-3, betas=(0.9, 0.999), eps=1e-8, grad_clip=5.0, weight_decay=0.0):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.grad_clip, self.weight_decay = grad_clip, weight_decay
        self.m = np.zeros_like(flat)
        self.v = np.zeros_like(flat)
        self.t = 0
        self._squares = np.zeros(-(-flat.size // NORM_BLOCK))

    def step(self, w, g, lr=None):
        """One step on w from the gradient g, after scaling g so its global norm is at most
        grad_clip (0: no clipping); zeroes g. Returns the norm before clipping."""
        self.t += 1
        lr = self.lr if lr is None else lr
        sq = self._squares
        on_threads(lambda b0, b1: block_squares(g, sq, b0, b1), sq.size, 2)
        norm = math.sqrt(sq.sum())
        scale = 1.0
        if self.grad_clip > 0 and norm > self.grad_clip:
            scale = self.grad_clip / (norm + 1e-12)
        beta1, beta2 = self.betas
        c1, c2 = 1.0 - beta1**self.t, 1.0 - beta2**self.t
        step = lr * math.sqrt(c2) / c1
        eps_hat = self.eps * math.sqrt(c2)
        decay = 1.0 - lr * self.weight_decay
        on_threads(
            lambda lo, hi: adam_apply(
                w[lo:hi], g[lo:hi], self.m[lo:hi], self.v[lo:hi], scale, step, eps_hat, decay, beta1, beta2
            ),
            w.size,
            1 << 16,
            16,  # whole cache lines
        )
        return norm
