"""The gradient-norm profile the long-range benchmark reads (Work.gn, filled by kernels.backward)
against finite differences, the benchmark's task and scoring, and two facts the benchmark relies
on: a saturated vanilla RNN loses the last step's gradient within a few steps while an LSTM at
initialisation keeps it, and a small RNN learns a short-range episode."""

import numpy as np
import pytest

from charrnn.inspect import long_range as LR
from charrnn.engine.model import Model, ModelConfig
from reference import numeric_grad, reference_loss

CELLS = ["lstm", "gru", "rnn"]


def tiny(cell, L=1, H=4, V=5, seed=0):
    cfg = ModelConfig(cell=cell, layers=L, hidden=H, vocab_size=V)
    m = Model(cfg, dtype=np.float64)
    rng = np.random.default_rng(seed)
    m.flat[:] = rng.uniform(-0.8, 0.8, m.flat.size)
    return m, rng


def last_step_loss_from(m, x, y, t, h, c):
    """Mean loss of the last step of window x, y (T, B), given the state (h, c), each (L, B, H),
    after step t: the rest of the window is run from there."""
    T, B = x.shape
    if t == T - 1:
        top = h[-1]
        logits = top @ m.params.Wy + m.params.by
    else:
        w = m.forward(np.ascontiguousarray(x[t + 1 :]), h, c)
        logits = w.P[(T - t - 2) * B :].copy()
    return reference_loss(logits, y[-1])


def fd_norm(m, x, y, h0, c0, l, t, eps=1e-6):
    """||d L_last / d h^l_t||, centred differences on the state of layer l after step t, with every
    other state held (for an lstm, c_t too: Work.gn is the gradient w.r.t. h alone)."""
    w = m.forward(np.ascontiguousarray(x[: t + 1]), h0, c0)
    h, c = w.Hs[:, -1].copy(), w.Cs[:, -1].copy()  # (L, B, H) after step t
    g = numeric_grad(lambda: last_step_loss_from(m, x, y, t, h, c), h[l], eps)  # h[l]: a view into h
    return np.linalg.norm(g)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L", [1, 2])
def test_last_step_profile_matches_finite_differences(cell, L):
    """Work.gn[l, t] is ||d L / d h^l_t|| at every step t, for the loss of the last step alone;
    checked for the top layer (with L = 2 the lower layer's gradient also flows up through the
    layer above at the same step, which a state perturbation between steps cannot reach)."""
    T, B, H, V = 7, 2, 4, 5
    m, rng = tiny(cell, L=L, H=H, V=V)
    x = rng.integers(0, V, (T, B)).astype(np.int32)
    y = rng.integers(0, V, (T, B)).astype(np.int32)
    h0 = rng.uniform(-0.5, 0.5, (L, B, H))
    c0 = rng.uniform(-0.5, 0.5, (L, B, H))
    gn = LR.last_step_profile(m, x, y, h0, c0)
    assert gn.shape == (L, T)
    fd = np.array([fd_norm(m, x, y, h0, c0, L - 1, t) for t in range(T)])
    assert fd.min() > 1e-6  # every step receives a gradient worth comparing
    np.testing.assert_allclose(gn[L - 1], fd, rtol=1e-6, atol=1e-10)


def test_profile_ignores_every_other_steps_loss():
    """Zeroing the earlier steps' dlogits matters: with the whole window's loss the profile is
    different (a profile that ignored the zeroing would pass the test above only by accident)."""
    m, rng = tiny("lstm")
    T, B = 6, 3
    x = rng.integers(0, 5, (T, B)).astype(np.int32)
    y = rng.integers(0, 5, (T, B)).astype(np.int32)
    h0, c0 = m.zero_state(B)
    last = LR.last_step_profile(m, x, y)[0]
    grads = m.zeros_like_params()[1]
    gn = np.zeros((1, T))
    m.loss_and_grad(x, y, h0, c0, grads, grad_norms=gn)
    whole = gn[0]
    assert last[-1] == pytest.approx(whole[-1] * T)  # mean over B, not over T*B characters
    assert np.all(np.abs(last[:-1] - whole[:-1] * T) > 1e-3)


def test_episodes_and_windows():
    rng = np.random.default_rng(0)
    k, S = 5, 4
    eps = LR.episodes(rng, 200, k, S)
    assert eps.shape == (200, k + 3) and eps.dtype == np.int32
    assert np.all(eps[:, 0] == eps[:, -1]) and np.all(eps[:, 0] < S)
    assert np.all(eps[:, 1 : k + 1] == S) and np.all(eps[:, k + 1] == S + 1)
    assert set(np.unique(eps[:, 0])) == set(range(S))
    x, y = LR.window(eps)
    assert x.shape == y.shape == (k + 2, 200) and x.flags.c_contiguous
    assert np.all(x[-1] == S + 1) and np.all(y[-1] == eps[:, 0])  # the marker step: the answer
    assert np.all(x[0] == eps[:, 0])
    text = "".join(LR.vocabulary("abcd")[i] for i in eps[0])
    assert text[0] == text[-1] and text[1:-1] == "." * k + "="


def test_accuracy_scores_only_the_answer():
    """A model whose decoder answers a fixed symbol scores the frequency of that symbol."""
    m = LR.new_model("rnn", 8, "abcd", seed=0)
    m.params.Wy[:] = 0
    m.params.by[:] = [0, 0, 5, 0, 0, 0]  # always 'c'
    eps = LR.episodes(np.random.default_rng(1), 1000, 3, 4)
    acc, loss = LR.answer_accuracy(m, eps, batch=300)
    assert acc == pytest.approx(np.mean(eps[:, -1] == 2))
    p_c = np.exp(5) / (np.exp(5) + 5)
    expect = np.mean(np.where(eps[:, -1] == 2, -np.log(p_c), -np.log(1 / (np.exp(5) + 5))))
    assert loss == pytest.approx(expect, rel=1e-5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_saturated_rnn_loses_the_gradient_an_lstm_keeps(seed):
    """At initialisation, on a k = 20 episode (T = 22), the fraction of the answer's gradient that
    reaches the symbol's step (lag 21). A vanilla RNN whose input weights drive tanh into
    saturation loses it; an LSTM keeps a fraction of a percent to a few percent. With its
    ordinary orthogonal initialisation the vanilla RNN keeps even more: at init, vanishing needs
    saturation (or contraction). Measured over seeds 1-8: lstm 6.4e-4..2.5e-3 (3.4e-3..2.2e-2
    while its forget bias started at 1, until 2026-12-07; 3.0e-2..5.4e-2 before its first-layer
    input rows started in +-2), saturated rnn 3e-14..2.3e-9, orthogonal rnn 0.21..0.65; the
    bounds below leave a margin of 2x or more, and float64 is deterministic."""
    k = 20
    x, y = LR.window(LR.episodes(np.random.default_rng(seed), 16, k, 4))
    ratio = lambda m: LR.lag_ratios(LR.last_step_profile(m, x, y)[0], [k + 1])[k + 1]
    lstm = LR.new_model("lstm", 32, "abcd", seed, dtype=np.float64)
    rnn = LR.new_model("rnn", 32, "abcd", seed, dtype=np.float64)
    assert ratio(rnn) > 0.1
    rnn.params.Wx0[:] *= 40  # input pre-activations up to +-7: tanh' < 1e-2 for most units
    assert ratio(lstm) > 3e-4
    assert ratio(rnn) < 1e-7


def test_rnn_learns_a_short_range_episode():
    """Learning, not just running: the benchmark's training loop teaches a small vanilla RNN to
    carry a symbol across 3 fillers (chance is 0.25, a chance-level answer costs ln 4 = 1.39 nats;
    measured over seeds 1-6: accuracy 1.0, answer loss about 0.005 after 150 steps)."""
    args = LR.TrainArgs(budget=200, hidden=32)
    seed = args.seeds[0]
    model = LR.new_model("rnn", args.hidden, args.symbols, seed)
    LR.train(model, 3, seed, args)
    acc, loss = LR.answer_accuracy(model, LR.episodes(LR.data_rng(seed, 3, 1), 1000, 3, 4))
    assert acc >= 0.99
    assert loss < 0.05
