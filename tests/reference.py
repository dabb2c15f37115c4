"""A naive per-gate NumPy implementation of the three cells, written for clarity, not speed:
the fused kernels are tested against it."""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_forward(cell, p, x, h0, c0, masks=None):
    """Logits (T*B, V) and final states, one gate at a time. p is a kernels.Params."""
    T, B = x.shape
    L, _, H = h0.shape
    inputs = [p.Wx0[x[t]] for t in range(T)]  # layer 0 input projection: a row lookup
    hT, cT = [], []
    for l in range(L):
        h, c = h0[l], c0[l]
        outs = []
        for t in range(T):
            xp = inputs[t] if l == 0 else inputs[t] @ p.Wx[l - 1]
            xp = xp + p.b[l]
            hp = h @ p.Wh[l]
            if cell == "lstm":
                i = sigmoid(xp[:, :H] + hp[:, :H])
                f = sigmoid(xp[:, H : 2 * H] + hp[:, H : 2 * H])
                g = np.tanh(xp[:, 2 * H : 3 * H] + hp[:, 2 * H : 3 * H])
                o = sigmoid(xp[:, 3 * H :] + hp[:, 3 * H :])
                c = f * c + i * g
                h = o * np.tanh(c)
            elif cell == "gru":
                r = sigmoid(xp[:, :H] + hp[:, :H])
                z = sigmoid(xp[:, H : 2 * H] + hp[:, H : 2 * H])
                n = np.tanh(xp[:, 2 * H :] + r * (hp[:, 2 * H :] + p.bh[l]))
                h = (1 - z) * n + z * h
            else:
                h = np.tanh(xp + hp)
            out = h if masks is None else h * masks[l, t]
            outs.append(out)
        inputs = outs
        hT.append(h)
        cT.append(c)
    top = np.concatenate(inputs, axis=0)  # (T*B, H), time-major like the kernels
    return top @ p.Wy + p.by, np.array(hT), np.array(cT)


def reference_loss(logits, y):
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return float(np.mean(lse - logits[np.arange(len(y)), y]))
