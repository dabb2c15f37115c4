"""Adam with global-norm gradient clipping, over the model's flat parameter buffer."""

import math

import numpy as np

from .kernels import kernel, like


@kernel
def grad_norm(g):
    s = 0.0
    for i in range(g.size):
        s += float(g[i]) * float(g[i])
    return math.sqrt(s)


@kernel
def adam_update(w, g, m, v, lr, beta1, beta2, eps, t, max_norm, weight_decay):
    """One Adam step on flat arrays, after scaling g so its global norm is at most max_norm
    (0 disables clipping). t is the 1-based step count. Zeroes g. Returns the norm before
    clipping."""
    norm = grad_norm(g)
    scale = 1.0
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-12)
    c1 = 1.0 - beta1**t
    c2 = 1.0 - beta2**t
    step = lr * math.sqrt(c2) / c1
    eps_hat = eps * math.sqrt(c2)
    x = w[0]
    one, b1, b2 = like(x, 1.0), like(x, beta1), like(x, beta2)
    sc, st, eh = like(x, scale), like(x, step), like(x, eps_hat)
    decay = like(x, 1.0 - lr * weight_decay)
    for i in range(w.size):
        gi = g[i] * sc
        m[i] = b1 * m[i] + (one - b1) * gi
        v[i] = b2 * v[i] + (one - b2) * gi * gi
        w[i] = w[i] * decay - st * m[i] / (np.sqrt(v[i]) + eh)
        g[i] = 0
    return norm


class Adam:
    """Adam state mirroring the flat parameter buffer (the moments are flat arrays too)."""

    def __init__(self, flat, lr=3e-3, betas=(0.9, 0.999), eps=1e-8, grad_clip=5.0, weight_decay=0.0):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.grad_clip, self.weight_decay = grad_clip, weight_decay
        self.m = np.zeros_like(flat)
        self.v = np.zeros_like(flat)
        self.t = 0

    def step(self, w, g, lr=None):
        self.t += 1
        return adam_update(
            w,
            g,
            self.m,
            self.v,
            self.lr if lr is None else lr,
            self.betas[0],
            self.betas[1],
            self.eps,
            self.t,
            self.grad_clip,
            self.weight_decay,
        )
