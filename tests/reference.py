"""What the tests share: a naive per-gate NumPy implementation of the three cells, written for
clarity, not speed (the fused kernels are tested against it), central finite differences, and the
tiny models and windows the kernel tests draw."""

import numpy as np

from charrnn.engine.model import Model, ModelConfig


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def layer_norm(v, eps=1e-5):
    """Each row of v at zero mean and unit variance (the kernels' LN_EPS inside the root)."""
    mu = v.mean(axis=-1, keepdims=True)
    return (v - mu) / np.sqrt(((v - mu) ** 2).mean(axis=-1, keepdims=True) + eps)


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
            elif cell == "lnlstm":  # Ba et al. 2016: the two products and c normalised apart
                K, q = 4 * H, p.ln[l]
                gx, bx, gh = q[:K], q[K : 2 * K], q[2 * K : 3 * K]
                gc, bc = q[3 * K : 3 * K + H], q[3 * K + H :]
                a = gx * layer_norm(xp) + bx + gh * layer_norm(hp)
                i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H : 2 * H]), sigmoid(a[:, 3 * H :])
                c = f * c + i * np.tanh(a[:, 2 * H : 3 * H])
                h = o * np.tanh(gc * layer_norm(c) + bc)
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


def numeric_grad_at(f, arr, at, eps=1e-6):
    """Central differences of f() with respect to arr's elements at the flat indices `at`
    (arr is changed in place and put back)."""
    flat, out = arr.reshape(-1), np.zeros(len(at))
    for n, i in enumerate(at):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        out[n] = (fp - fm) / (2 * eps)
    return out


def numeric_grad(f, arr, eps=1e-6):
    """Central differences of f() with respect to every element of arr, shaped like it."""
    return numeric_grad_at(f, arr, range(arr.size), eps).reshape(arr.shape).astype(arr.dtype)


# tiny models and windows the kernel tests share (float64: the gradient checks' precision)
CELLS = ["lstm", "gru", "rnn", "lnlstm"]


def tiny(cell, L=2, H=5, V=7, dropout=0.0, seed=0, dtype=np.float64):
    cfg = ModelConfig(cell=cell, layers=L, hidden=H, vocab_size=V, dropout=dropout)
    m = Model(cfg, dtype=dtype)
    rng = np.random.default_rng(seed)
    m.flat[:] = rng.uniform(-0.6, 0.6, m.flat.size)  # every weight non-trivial, biases too
    return m, rng


def window(rng, T=6, B=3, V=7, L=2, H=5, dtype=np.float64):
    x = rng.integers(0, V, (T, B)).astype(np.int32)
    y = rng.integers(0, V, (T, B)).astype(np.int32)
    h0 = rng.uniform(-0.5, 0.5, (L, B, H)).astype(dtype)
    c0 = rng.uniform(-0.5, 0.5, (L, B, H)).astype(dtype)
    return x, y, h0, c0


def assert_grad(analytic, numeric, name):
    """Elementwise agreement to 1e-5 relative; the absolute floor (1e-9) sits well above the
    finite-difference round-off (~1e-10) and far below any gradient a bug would produce."""
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-9, err_msg=name)
