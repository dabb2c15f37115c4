"""A training window with bf16 products (kernels.py's bf16 path over bgemm.py and amx.py): the
weights it packs are their bf16 rounding, its loss and gradients stay close to the float32
window's for every cell, with and without dropout, and the two bf16 engines (AMX tiles and
vdpbf16ps) agree to float32 rounding. Skipped on a CPU without AVX512-BF16."""

import numpy as np
import pytest

from charrnn.engine import amx, bgemm, precision as P
from charrnn.engine.model import Model, ModelConfig, dropout_masks

pytestmark = pytest.mark.skipif(
    not bgemm.available(), reason="this CPU has no AVX512-BF16 (vdpbf16ps), which bf16 products need"
)
T, B, V, H = 12, 16, 11, 32  # two parts of 8 streams where there are two threads


def window(cell, precision, dropout=0.0, seed=0):
    """(loss, flat gradient, final h) of one window of a fresh model at `precision`."""
    m = Model(ModelConfig(cell, 2, H, V, dropout=dropout)).init_weights(np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    x, y = (rng.integers(0, V, (T, B)).astype(np.int32) for _ in range(2))
    h, c = (rng.standard_normal((2, B, H)).astype(np.float32) * 0.5 for _ in range(2))
    masks = dropout_masks(rng, (2, T, B, H), dropout, np.float32) if dropout else None
    flat, grads = m.zeros_like_params()
    loss, (hT, _) = m.loss_and_grad(x, y, h, c, grads, masks, precision=precision)
    return m, loss, flat, hT


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_bf16_window_stays_close_to_the_float32_window(cell, dropout):
    """Rounding the products' inputs to 8 significant bits (relative error 2^-9) moves the
    loss by far less than a thousandth and the gradient by about a percent of its norm."""
    _, loss32, g32, h32 = window(cell, "fp32", dropout)
    _, loss16, g16, h16 = window(cell, "bf16", dropout)
    assert abs(loss16 - loss32) < 1e-3 * loss32
    # the lnlstm is some 25 times as sensitive to a rounding of its weights: in float64, a
    # relative noise of 2^-10 on every weight of this window's model moves its gradient by 2.0%
    # of its norm (the LSTM's by 0.08%) and its last h by up to 0.024 (0.001): normalising a
    # product divides by its spread, and the backward subtracts near-equal terms
    ln = cell == "lnlstm"
    assert np.linalg.norm(g16 - g32) < (0.08 if ln else 0.03) * np.linalg.norm(g32)
    assert np.abs(h16 - h32).max() < (0.06 if ln else 0.02)
    assert not np.array_equal(g16, g32)  # it did take the bf16 path


def test_the_packed_weights_are_their_bf16_rounding():
    m, *_ = window("lstm", "bf16")
    w = m.work(T, B // len(m.parts(B)), False, 0, False, "bf16")
    L, K = 2, 4 * H
    assert w.Whp.size == 0 and w.Gp.size == 0  # no float32 copies beside them
    for l, W in enumerate(list(m.params.Wh) + list(m.params.Wx)):
        want = np.zeros(H * K, np.uint16)
        bgemm.pack(np.asarray(W), want)
        np.testing.assert_array_equal(w.Wbp[l], want)
        bits = want.reshape(K // bgemm.NR, H // 2, 2, bgemm.NR // 2, 2)  # strip, pair, vector, lane, half
        np.testing.assert_array_equal(bits.transpose(1, 4, 0, 2, 3).reshape(H, K), P.bf16_bits(np.asarray(W)))
    assert w.WbTp.shape == (2 * L - 1, K * H)


@pytest.mark.skipif(not amx.available(), reason="no AMX tiles here to set beside vdpbf16ps")
def test_amx_and_vdpbf16ps_windows_agree(monkeypatch):
    _, loss_amx, g_amx, _ = window("lstm", "bf16", 0.3)
    monkeypatch.setattr(amx, "_available", False)  # new buffers, without the tiles' configuration
    m, loss_vdp, g_vdp, _ = window("lstm", "bf16", 0.3)
    assert m.work(T, B // len(m.parts(B)), True, 0, False, "bf16").tiles.size == 0
    assert abs(loss_amx - loss_vdp) < 1e-5 * loss_amx
    assert np.linalg.norm(g_amx - g_vdp) < 1e-4 * np.linalg.norm(g_amx)
