"""The fused kernels against the naive reference, finite differences, and the truncated-BPTT
invariants, for every cell, in float64 at tiny sizes."""

import numpy as np
import pytest

from charrnn.engine import kernels
from charrnn.engine.model import Model
from charrnn.engine.sample_kernels import Pick
from reference import CELLS, assert_grad, numeric_grad, reference_forward, reference_loss, tiny, window


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L, H, B", [(1, 5, 3), (3, 5, 3), (2, 16, 7)])
def test_forward_matches_reference(cell, L, H, B):
    """H = 16 takes the packed recurrent product (gemm.py), H = 5 np.dot."""
    m, rng = tiny(cell, L=L, H=H)
    x, y, h0, c0 = window(rng, L=L, H=H, B=B)
    w = m.forward(x, h0, c0)
    assert kernels.packed(w) == (H == 16)
    logits, hT, cT = reference_forward(cell, m.params, x, h0, c0)
    np.testing.assert_allclose(w.P, logits, rtol=0, atol=1e-10)
    np.testing.assert_allclose(w.Hs[:, -1], hT, rtol=0, atol=1e-10)
    if cell in ("lstm", "lnlstm"):
        np.testing.assert_allclose(w.Cs[:, -1], cT, rtol=0, atol=1e-10)
    assert (
        abs(
            kernels.xent(w.P.copy(), y.reshape(-1), False, 0) / y.size - reference_loss(logits, y.reshape(-1))
        )
        < 1e-10
    )


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dropout, H", [(0.0, 5), (0.4, 5), (0.4, 16)])
def test_backward_matches_finite_differences(cell, dropout, H):
    m, rng = tiny(cell, L=2, H=H, dropout=dropout)
    x, y, h0, c0 = window(rng, H=H)
    masks = None
    if dropout:
        keep = rng.random((2, 6, 3, H)) >= dropout
        masks = keep / (1 - dropout)

    def loss():
        w = m.forward(x, h0, c0, masks)
        return kernels.xent(w.P, y.reshape(-1), False, 0) / y.size

    gflat, grads = m.zeros_like_params()
    dstate = (np.zeros_like(h0), np.zeros_like(c0))
    m.loss_and_grad(x, y, h0, c0, grads, masks, dstate)
    for name, g in zip(grads._fields, grads):
        if g.size == 0:
            continue
        num = numeric_grad(loss, getattr(m.params, name))
        assert_grad(g, num, name)
        assert np.abs(g).max() > 0, name  # every parameter takes part
    assert_grad(dstate[0], numeric_grad(loss, h0), "h0")
    if cell in ("lstm", "lnlstm"):
        assert_grad(dstate[1], numeric_grad(loss, c0), "c0")


@pytest.mark.parametrize("cell", CELLS)
def test_grads_accumulate(cell):
    m, rng = tiny(cell)
    x, y, h0, c0 = window(rng)
    _, g1 = m.zeros_like_params()
    m.loss_and_grad(x, y, h0, c0, g1)
    f2, g2 = m.zeros_like_params()
    m.loss_and_grad(x, y, h0, c0, g2)
    m.loss_and_grad(x, y, h0, c0, g2)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(2 * a, b, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_chunked_windows_equal_one_window(cell):
    """One forward over T equals three forwards over T/3 with the state carried."""
    m, rng = tiny(cell)
    x, y, h0, c0 = window(rng, T=9)
    w = m.forward(x, h0, c0)
    whole = w.P.copy()
    hT = w.Hs[:, -1].copy()
    h, c, parts = h0, c0, []
    for k in range(3):
        w = m.forward(np.ascontiguousarray(x[3 * k : 3 * k + 3]), h, c)
        parts.append(w.P.copy())
        h, c = w.Hs[:, -1].copy(), w.Cs[:, -1].copy()
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-12)
    np.testing.assert_allclose(h, hT, atol=1e-12)


def test_fast_tanh_is_close_to_exact():
    from numba import njit

    @njit
    def apply(a):
        out = np.empty_like(a)
        for i in range(a.size):
            out[i] = kernels.tanh_(a[i])
        return out

    @njit
    def apply_sig(a):
        out = np.empty_like(a)
        for i in range(a.size):
            out[i] = kernels.sigmoid_(a[i])
        return out

    x = np.linspace(-20, 20, 400001).astype(np.float32)
    exact = np.tanh(x.astype(np.float64))
    assert np.abs(apply(x) - exact).max() < 5e-7
    assert np.abs(apply_sig(x) - 1 / (1 + np.exp(-x.astype(np.float64)))).max() < 5e-7
    x64 = x.astype(np.float64)
    assert np.abs(apply(x64) - exact).max() < 1e-15  # float64 stays exact


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("H", [5, 16])
def test_streams_split_across_threads_give_the_same_window(cell, H, monkeypatch):
    """The model splits a window's streams into parts run on separate threads; the loss, the
    gradients and the states must equal one kernel call over the whole window."""
    monkeypatch.setenv("CHARRNN_THREADS", "2")
    m, rng = tiny(cell, H=H)
    B = 16
    x, y, h0, c0 = window(rng, B=B, H=H)
    assert len(m.parts(B)) == 2
    _, whole = m.zeros_like_params()
    dh_w, dc_w = np.zeros_like(h0), np.zeros_like(c0)
    w = m.work(6, B)
    loss_w = kernels.window_grad(m.window_cell, m.params, x, y, h0, c0, w, whole, dh_w, dc_w, x.size) / x.size
    _, split = m.zeros_like_params()
    dstate = (np.zeros_like(h0), np.zeros_like(c0))
    loss, (hT, cT) = m.loss_and_grad(x, y, h0, c0, split, dstate=dstate)
    assert abs(loss - loss_w) < 1e-12
    for a, b in zip(whole, split):
        np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(dstate[0], dh_w, atol=1e-12)
    np.testing.assert_allclose(hT, w.Hs[:, -1], atol=1e-12)
    loss2, (h2, _) = m.window_loss(x, y, h0, c0)
    assert abs(loss2 - loss_w) < 1e-12
    np.testing.assert_allclose(h2, hT, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_float32_kernels_agree_with_float64(cell):
    """float32 uses the arithmetic-only tanh; loss and gradients must stay close to float64."""
    m64, rng = tiny(cell, H=16)
    m32 = Model(m64.config, flat=m64.flat.astype(np.float32), dtype=np.float32)
    x, y, h0, c0 = window(rng, T=10, B=4, H=16)
    _, g64 = m64.zeros_like_params()
    _, g32 = m32.zeros_like_params()
    l64, _ = m64.loss_and_grad(x, y, h0, c0, g64)
    l32, _ = m32.loss_and_grad(x, y, h0.astype(np.float32), c0.astype(np.float32), g32)
    assert abs(l64 - l32) < 1e-5
    for name, a, b in zip(g64._fields, g64, g32):
        if a.size:
            assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max() + 1e-7, name


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("H", [5, 16])
def test_stepping_one_character_at_a_time_equals_the_window(cell, H):
    """The sampler's one-step kernel, fed the window's characters one by one, reproduces the
    window forward's logits and final state: sampling sees the model training trained."""
    from charrnn.engine import sample_kernels, sampler

    m, rng = tiny(cell, H=H)
    x, y, h0, c0 = window(rng, T=7, H=H)
    w = m.forward(x, h0, c0)
    logits = w.P.reshape(7, 3, -1).copy()
    h, c = h0.copy(), c0.copy()
    s = sampler.Sampler(m, 3)
    for t in range(7):
        sample_kernels.step(m.cell, m.params, s.work, x[t].astype(np.int64), h, c)
        np.testing.assert_allclose(h[-1] @ m.params.Wy + m.params.by, logits[t], atol=1e-12)
    np.testing.assert_allclose(h, w.Hs[:, -1], atol=1e-12)
    if cell in ("lstm", "lnlstm"):
        np.testing.assert_allclose(c, w.Cs[:, -1], atol=1e-12)


@pytest.mark.parametrize("L", [1, 3])
def test_batch_one_lstm_split_across_cores_equals_the_serial_sampler(L, monkeypatch):
    """The wide-LSTM sampling path (each step's units split into chunks run in parallel, with
    the weights laid out by chunk) gives the serial path's states and, from one seed, its text."""
    from charrnn.engine import sampler, threads

    monkeypatch.setattr(sampler, "PARALLEL_MIN_HIDDEN", 6)
    monkeypatch.setattr(threads, "available", lambda: 2)
    monkeypatch.delenv("CHARRNN_THREADS", raising=False)
    m, rng = tiny("lstm", L=L, H=6)
    serial, split = sampler.Sampler(m, 1, parallel=False), sampler.Sampler(m, 1, parallel=True)
    assert not serial.parallel and split.parallel
    assert not sampler.Sampler(m, 1).parallel  # by default a Switch chooses (test_switch.py)
    ids = rng.integers(0, 7, 20)
    for s in (serial, split):
        s.prime(ids)
    for n in (1, 40, 5, 13):
        a = serial.generate(n, np.random.default_rng(n), Pick(0.9))
        b = split.generate(n, np.random.default_rng(n), Pick(0.9))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(split.h, serial.h, atol=1e-12)
        np.testing.assert_allclose(split.c, serial.c, atol=1e-12)


class _LateHelpers:
    """A stand-in for the split path's thread pool whose helpers start `delay` seconds late
    (None: never), as when another process holds the cores they would run on."""

    def __init__(self, delay):
        self.delay = delay

    def __call__(self, *args, **kwargs):
        return self

    def submit(self, fn, *args):
        import threading
        import time
        from concurrent.futures import Future

        done = Future()
        if self.delay is None:
            done.set_result(None)
            return done

        def late():
            time.sleep(self.delay)
            done.set_result(fn(*args))

        threading.Thread(target=late, daemon=True).start()
        return done


@pytest.mark.parametrize("delay", [None, 0.002])
def test_split_sampler_runs_the_chunks_of_helpers_that_have_not_started(delay, monkeypatch):
    """A chunk whose helper thread is not running when the sampling thread needs it is run by
    the sampling thread (sample_kernels.step_split): with helpers that never start the split
    path still finishes, and with helpers that start late (taking some chunks, not others)
    the text and the states are the serial path's."""
    from charrnn.engine import sample_kernels, sampler, threads

    monkeypatch.setattr(sampler, "PARALLEL_MIN_HIDDEN", 6)
    monkeypatch.setattr(threads, "available", lambda: 3)
    monkeypatch.delenv("CHARRNN_THREADS", raising=False)
    monkeypatch.setattr(sampler, "ThreadPoolExecutor", _LateHelpers(delay))
    m, rng = tiny("lstm", L=2, H=6)
    serial, split = sampler.Sampler(m, 1, parallel=False), sampler.Sampler(m, 1, parallel=True)
    assert split.work.Whb.shape[1] == 3
    ids = rng.integers(0, 7, 9)
    for s in (serial, split):
        s.prime(ids)
    helped = lambda: max(split._flags[sample_kernels.done_at(j)] for j in (1, 2))  # noqa: E731
    for n in [3, 400] + [20000] * (0 if delay is None else 20):
        a = serial.generate(n, np.random.default_rng(n), Pick(0.9))
        b = split.generate(n, np.random.default_rng(n), Pick(0.9))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(split.h, serial.h, atol=1e-12)
        np.testing.assert_allclose(split.c, serial.c, atol=1e-12)
        if n == 20000 and helped() > 0:
            break
    # the helpers finished chunks (the last step they did), unless they never started
    assert (helped() > 0) == (delay is not None)


def test_split_sampler_over_many_short_calls_reuses_its_helpers_and_keeps_the_text(monkeypatch):
    """Calls of 1 to 40 characters, one after another and after pauses longer than a helper
    waits (LINGER): helpers that serve the next call, leave, and are sent for again must not
    change the text or the states, and must be reused rather than sent for at every call."""
    import time

    from charrnn.engine import sampler, threads

    monkeypatch.setattr(sampler, "PARALLEL_MIN_HIDDEN", 6)
    monkeypatch.setattr(threads, "available", lambda: 3)
    monkeypatch.delenv("CHARRNN_THREADS", raising=False)
    sent = []

    class Counting(sampler.ThreadPoolExecutor):
        def submit(self, fn, *args):
            sent.append(args[2])
            return super().submit(fn, *args)

    monkeypatch.setattr(sampler, "ThreadPoolExecutor", Counting)
    m, rng = tiny("lstm", L=2, H=6)
    serial, split = sampler.Sampler(m, 1, parallel=False), sampler.Sampler(m, 1, parallel=True)
    ids = rng.integers(0, 7, 9)
    for s in (serial, split):
        s.prime(ids)
    lengths = rng.integers(1, 41, 300)
    for i, n in enumerate(lengths):
        if i % 50 == 49:
            time.sleep(0.02)  # past LINGER's 1-2 ms: the helpers return
        a = serial.generate(int(n), np.random.default_rng(i), Pick(0.9))
        b = split.generate(int(n), np.random.default_rng(i), Pick(0.9))
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(split.h, serial.h, atol=1e-12)
    np.testing.assert_allclose(split.c, serial.c, atol=1e-12)
    # sent for after each pause, and now and then beside; at every call it would be 600
    assert set(sent) == {1, 2} and len(sent) <= len(lengths) // 3


def test_unit_blocks_regroup_gate_columns_by_unit_chunk():
    from charrnn.engine.sampler import unit_blocks

    H, k = 4, 2
    W = np.arange(3 * 4 * H).reshape(3, 4 * H)  # column index g * H + u
    B = unit_blocks(W, k)
    assert B.shape == (k, 3, 4 * H // k)
    for chunk in range(k):
        for g in range(4):
            for j in range(H // k):
                np.testing.assert_array_equal(
                    B[chunk, :, g * (H // k) + j], W[:, g * H + chunk * (H // k) + j]
                )


@pytest.mark.parametrize("cores, H, chunks", [(3, 4, 1), (4, 6, 2), (3, 6, 3)])
def test_split_sampler_chunks_divide_the_units_whatever_the_core_count(cores, H, chunks, monkeypatch):
    """As many chunks as cores when they divide H, else the largest count that does (the
    warm-up forces the split path on a 2-unit model on any machine)."""
    from charrnn.engine import sampler, threads

    monkeypatch.setattr(threads, "num_threads", lambda: cores)
    m, rng = tiny("lstm", H=H)
    serial, split = sampler.Sampler(m, 1, parallel=False), sampler.Sampler(m, 1, parallel=True)
    assert split.work.Whb.shape[1] == chunks
    for s in (serial, split):
        s.prime(rng.integers(0, 7, 5))
    np.testing.assert_array_equal(
        serial.generate(30, np.random.default_rng(1), Pick(0.9)),
        split.generate(30, np.random.default_rng(1), Pick(0.9)),
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_packed_product_equals_numpy(dtype):
    """gemm.matmul over a packed matrix, for every row count a tile can leave over (1-5 after
    full tiles of 6), and for a matrix packed from a transposed view."""
    from charrnn.engine import gemm

    rng = np.random.default_rng(0)
    one = np.zeros(1, dtype)
    NR = gemm.strip_width(one)
    assert gemm.packable(one, 3 * NR) and not gemm.packable(one, NR + 1)
    W = rng.standard_normal((24, 3 * NR)).astype(dtype)
    Wp = np.empty(W.size, dtype)
    gemm.pack(W, Wp)
    WTp = np.empty(W.size, dtype)
    gemm.pack(np.ascontiguousarray(W.T).T, WTp)  # the same matrix through a transposed view
    np.testing.assert_array_equal(Wp, WTp)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for m in range(1, 14):
        A = rng.standard_normal((m, 24)).astype(dtype)
        C = np.full((m, 3 * NR), np.nan, dtype)
        gemm.matmul(A, Wp, C)
        np.testing.assert_allclose(C, A.astype(np.float64) @ W, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("parts", [2, 3, 5])
def test_weights_packed_in_shares_equal_one_packing(dtype, parts):
    """The threads of a window each pack a share of every matrix's strips (model._pack); the
    shares together are the whole packing, forward (vector copies) and transposed, and the
    packed rows are those of the matrix."""
    from charrnn.engine import gemm

    NR = gemm.strip_width(np.zeros(1, dtype))
    m, _ = tiny("lstm", L=3, H=NR, dtype=dtype)
    whole = m.work(4, 2)
    kernels.pack_weights(m.params, whole, True, 0, 1)  # the package's signature, compiled already
    shared = kernels.Work(*[a.copy() for a in whole])
    shared.Whp[:] = np.nan
    shared.WhTp[:] = np.nan
    for i in range(parts):
        kernels.pack_weights(m.params, shared, True, i, parts)
    np.testing.assert_array_equal(shared.Whp, whole.Whp)
    np.testing.assert_array_equal(shared.WhTp, whole.WhTp)
    H, K = m.params.Wh.shape[1:]
    strip = whole.Whp[0][: H * NR].reshape(H, NR)  # the first strip of layer 0's Wh
    np.testing.assert_array_equal(strip, m.params.Wh[0][:, :NR])
    strip = whole.WhTp[3][: K * NR].reshape(K, NR)  # of layer 1's Wx (after 3 Wh), transposed
    np.testing.assert_array_equal(strip, m.params.Wx[0].T[:, :NR])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_packed_products_over_a_window_equal_numpy(dtype):
    """A window's products through gemm.py: matmul over more rows than one block of A holds
    (the last block and its last tile both partial), and the weight gradient matmul_tn_acc,
    C += X^T G, over more rows than one packed block of G, for every row count of C a tile
    can leave over; C's old contents are kept and added to."""
    from charrnn.engine import gemm

    rng = np.random.default_rng(1)
    one = np.zeros(1, dtype)
    NR = gemm.strip_width(one)
    tol = 1e-10 if dtype == np.float64 else 2e-3
    Kd = 40
    m = gemm.A_BLOCK // Kd * 2 + 7  # several blocks of rows, the last a partial one
    A = rng.standard_normal((m, Kd)).astype(dtype)
    W = rng.standard_normal((Kd, 2 * NR)).astype(dtype)
    Wp = np.empty(W.size, dtype)
    gemm.pack(W, Wp)
    C = np.full((m, 2 * NR), np.nan, dtype)
    gemm.matmul(A, Wp, C)
    np.testing.assert_allclose(C, A.astype(np.float64) @ W, rtol=0, atol=tol)
    M = 2 * gemm.KC + 5  # three blocks of G's rows, the last of 5
    for H in range(1, 14):
        X = rng.standard_normal((M, H)).astype(dtype)
        G = rng.standard_normal((M, 3 * NR)).astype(dtype)
        C0 = rng.standard_normal((H, 3 * NR)).astype(dtype)
        C = C0.copy()
        gemm.matmul_tn_acc(X, G, C, np.empty(gemm.KC * 3 * NR, dtype))
        want = C0.astype(np.float64) + X.T.astype(np.float64) @ G
        np.testing.assert_allclose(C, want, rtol=0, atol=tol)


@pytest.mark.parametrize("cell", CELLS)
def test_grad_norms_are_measured_only_when_asked(cell):
    """Given an array, the backward pass records |d loss / d h_t| of every layer and step in
    it; at the top layer's last step that is the decoder's gradient alone. Not asked, no
    window has room for them."""
    m, rng = tiny(cell)
    x, y, h0, c0 = window(rng)
    _, grads = m.zeros_like_params()
    m.loss_and_grad(x, y, h0, c0, grads)
    assert all(w.gn.size == 0 for w in m._work.values())
    gn = np.zeros((2, 6))
    m.loss_and_grad(x, y, h0, c0, grads, grad_norms=gn)
    w = m.forward(x, h0, c0)
    P = w.P.copy()
    kernels.xent(P, y.reshape(-1), True, 0)
    top = (P @ m.params.Wy.T).reshape(6, 3, -1)[-1]
    np.testing.assert_allclose(gn[1, -1], np.linalg.norm(top), rtol=1e-12)


@pytest.mark.parametrize(
    "shape, dtype, bits",
    [
        ((2, 6, 4, 16), np.float32, np.random.PCG64),
        ((2, 6, 3, 5), np.float64, np.random.PCG64),
        ((3, 3, 3), np.float32, np.random.PCG64),
        ((2, 6, 4, 16), np.float32, np.random.MT19937),
    ],
)
def test_dropout_masks_are_the_ones_rng_random_would_draw(shape, dtype, bits):
    """The fast masks (from the generator's raw output) equal (rng.random(shape, float32) >= p)
    / (1 - p), and leave the generator exactly as that call would, odd sizes and other bit
    generators included."""
    from charrnn.engine.model import dropout_masks

    a, b = np.random.Generator(bits(7)), np.random.Generator(bits(7))
    for _ in range(3):
        ref = (a.random(shape, dtype=np.float32) >= 0.3).astype(dtype) * dtype(1 / 0.7)
        got = dropout_masks(b, shape, 0.3, dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_equal(a.bit_generator.state, b.bit_generator.state)
        assert a.random() == b.random()


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("bits", [np.random.PCG64, np.random.PCG64DXSM])
def test_a_large_mask_drawn_by_several_threads_is_the_one_rng_random_would_draw(monkeypatch, parts, bits):
    """Above SPLIT_WORDS draws each thread draws its part from a copy of the generator advanced
    to it: the same mask, into the array given, the generator left where rng.random leaves it."""
    from charrnn.engine import masks, threads

    monkeypatch.setattr(masks, "SPLIT_WORDS", 16)
    monkeypatch.setattr(threads, "num_threads", lambda: parts)
    a, b = np.random.Generator(bits(11)), np.random.Generator(bits(11))
    out = np.empty((2, 8, 21), np.float32)  # 336 elements, 168 draws: parts of 84 or 56
    for _ in range(2):
        ref = (a.random(out.shape, dtype=np.float32) >= 0.1).astype(np.float32) * np.float32(1 / 0.9)
        assert masks.dropout_masks(b, out.shape, 0.1, np.float32, out) is out
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_equal(a.bit_generator.state, b.bit_generator.state)
        assert a.random() == b.random()
