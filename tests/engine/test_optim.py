"""Adam with clipping and decoupled weight decay against a float64 reference written from
the formulas, on one thread and on two (the threads share the buffer, and the result must not
depend on how many there are)."""

import numpy as np
import pytest

from charrnn.engine import optim, threads


def reference_adam(w, grads, lr, betas, eps, clip, decay):
    """w after one AdamW step per gradient in grads, with global-norm clipping, in float64;
    and the norms before clipping."""
    w = w.astype(np.float64)
    m, v, norms = np.zeros_like(w), np.zeros_like(w), []
    for t, g in enumerate(grads, 1):
        g = g.astype(np.float64)
        norm = np.sqrt((g * g).sum())
        norms.append(norm)
        if clip > 0 and norm > clip:
            g = g * clip / norm
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        w = w * (1 - lr * decay) - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w, norms


@pytest.mark.parametrize("n", [5, 40_003, 300_001])  # one block; several; shared by threads
def test_adam_matches_the_reference_on_any_thread_count(n):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(n).astype(np.float32)
    # the first gradients clipped (norm above 5), the last not
    grads = [rng.standard_normal(n).astype(np.float32) * s for s in (3.0, 1.0, 1e-3 / np.sqrt(n))]
    want, norms = reference_adam(w0, grads, 3e-3, (0.9, 0.999), 1e-8, 5.0, 0.1)
    assert norms[0] > 5 and norms[-1] < 5
    results = []
    for k in (1, 2):
        threads.configure(k)
        w = w0.copy()
        opt = optim.Adam(w, lr=3e-3, grad_clip=5.0, weight_decay=0.1)
        for g, norm in zip(grads, norms):
            g = g.copy()
            assert opt.step(w, g) == pytest.approx(norm, rel=1e-12)
            assert not g.any()  # zeroed for the next window's accumulation
        np.testing.assert_allclose(w, want, rtol=0, atol=2e-6)
        results.append(w)
    np.testing.assert_array_equal(results[0], results[1])
