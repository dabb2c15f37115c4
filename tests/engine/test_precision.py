"""Sampling with fewer bytes a weight (engine/precision.py, engine/qgemm.py): the rounding of
each format against its definition, the narrow products against NumPy on the weights they
stand for, the reduced sampler against the exact one within a bound computed from the
quantisation error, and the option through CharModel and the command line."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from charrnn.engine import precision as P, qgemm, sampler
from charrnn.engine.model import Model, ModelConfig
from charrnn.engine.sample_kernels import Pick

NARROW = ["bf16", "int8"]
EPS32 = float(np.finfo(np.float32).eps)


def test_bf16_rounds_to_the_nearest_and_widens_by_a_shift():
    one = 1.0
    cases = {
        one: 0x3F80,
        -2.0: 0xC000,
        0.0: 0,
        one + 2**-8: 0x3F80,  # half-way, ties to the even 1.0
        one + 3 * 2**-8: 0x3F82,  # half-way, ties to the even 1 + 2^-6
        one + 2**-8 + 2**-20: 0x3F81,
    }  # past half-way: up
    for x, bits in cases.items():
        assert int(P.bf16_bits(np.float32(x))) == bits, x
    rng = np.random.default_rng(0)
    W = (rng.standard_normal(10_000) * 10.0 ** rng.integers(-6, 6, 10_000)).astype(np.float32)
    back = P.bf16_widen(P.bf16_bits(W))
    assert (P.bf16_bits(W).astype(np.uint32) << 16 == back.view(np.uint32)).all()
    assert np.all(np.abs(back.astype(np.float64) - W) <= 2.0**-8 * np.abs(W))  # half a unit in the 8th bit


def test_int8_keeps_each_column_within_half_a_step():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 40, 24)).astype(np.float32) * rng.uniform(0.01, 5, 24)
    W[1, :, 5] = 0.0  # a column of zeros
    q, s = P.int8_quantise(W)
    assert q.dtype == np.int8 and s.shape == (3, 24)
    assert s[1, 5] == 1.0 and not q[1, :, 5].any()
    np.testing.assert_array_equal(np.abs(q).max(axis=1)[s != 1.0], 127)  # full range used
    err = np.abs(P.dequantised(W, "int8").astype(np.float64) - W)
    assert np.all(err <= s[:, None, :] * (0.5 + 1e-6))


@pytest.mark.parametrize("precision", NARROW)
def test_narrow_product_equals_numpy_on_the_weights_it_stands_for(precision):
    """qgemm.matmul for every row count a tile leaves over and a width that is not whole
    strips: within float32 rounding of A @ dequantised(W) in float64, zeros in the padding,
    and within the quantisation bound |A| @ |W - dequantised(W)| of the exact A @ W."""
    rng = np.random.default_rng(1)
    NR = P.strip_width()
    Kd, N = 37, 5 * NR + 3
    W = rng.standard_normal((Kd, N)).astype(np.float32)
    Wq, S = P.pack(W, precision)
    assert Wq.dtype == P.STORAGE[precision] and Wq.size == Kd * S.size == Kd * 6 * NR
    Wd = P.dequantised(W, precision).astype(np.float64)
    for m in range(1, 11):
        A = rng.standard_normal((m, Kd)).astype(np.float32)
        C = np.full((m, S.size), np.nan, np.float32)
        qgemm.matmul(A, Wq, S, C)
        assert not C[:, N:].any()
        rounding = (Kd + 2) * EPS32 * (np.abs(A) @ np.abs(Wd))
        assert np.all(np.abs(C[:, :N] - A @ Wd) <= rounding)
        quant = np.abs(A).astype(np.float64) @ np.abs(W - Wd)
        assert np.all(np.abs(C[:, :N] - A.astype(np.float64) @ W) <= quant + rounding)


def model(cell="lstm", L=2, H=20, V=7, seed=0):
    m = Model(ModelConfig(cell=cell, layers=L, hidden=H, vocab_size=V))
    m.flat[:] = np.random.default_rng(seed).uniform(-0.6, 0.6, m.flat.size)
    return m


def reduced_copy(m, precision):
    out = Model(m.config, m.flat.copy())
    for name, arr in P.reduced_params(m.params, precision).items():
        getattr(out.params, name)[...] = arr
    return out


@pytest.mark.parametrize("precision", NARROW)
@pytest.mark.parametrize("cell, L", [("lstm", 1), ("lstm", 3), ("gru", 2), ("rnn", 2)])
def test_reduced_sampler_is_the_exact_sampler_on_the_reduced_weights(precision, cell, L):
    """A bf16 or int8 Sampler computes what the float32 Sampler computes on the weights the
    format stands for (bf16 widens exactly; int8 applies its scales after the sums, so
    within float32 rounding): the same text from a seed, the same states."""
    m = model(cell, L)
    exact = reduced_copy(m, precision)
    for N in (1, 5):
        a, b = sampler.Sampler(m, N, precision=precision), sampler.Sampler(exact, N)
        ids = np.random.default_rng(2).integers(0, 7, 12)
        for s in (a, b):
            s.prime(ids)
        for n in (1, 30):
            np.testing.assert_array_equal(
                a.generate(n, np.random.default_rng(n), Pick(0.9)),
                b.generate(n, np.random.default_rng(n), Pick(0.9)),
            )
            np.testing.assert_allclose(a.h, b.h, rtol=0, atol=1e-5)


@pytest.mark.parametrize("precision", NARROW)
def test_one_step_logits_within_the_bound_of_the_quantisation_error(precision):
    """From the same state, one batch-1 step of a 1-layer LSTM and its decoder in a narrow
    format against the exact float32 step: the logits differ by no more than the bound that
    the weights' errors give, carried through the cell with the slopes of its functions
    (sigmoid' <= 1/4, tanh' <= 1), plus float32 rounding."""
    m = model("lstm", L=1, H=24, V=9, seed=3)
    p, H = m.params, 24
    rng = np.random.default_rng(4)
    h0, c0 = rng.uniform(-1, 1, H).astype(np.float32), rng.uniform(-2, 2, H).astype(np.float32)
    x = 5
    logits = {}
    for prec in ("fp32", precision):
        s = sampler.Sampler(m, 1, precision=prec)
        s.h[0, 0], s.c[0, 0], s.cur[0] = h0, c0, x
        s.generate(1, np.random.default_rng(0), Pick(0.0))
        logits[prec] = s.work.logits[0, :9].astype(np.float64)
        if prec == "fp32":
            h1 = s.h[0, 0].astype(np.float64)
    dWh = np.abs(p.Wh[0] - P.dequantised(p.Wh[0], precision))
    dWy = np.abs(p.Wy - P.dequantised(p.Wy, precision))
    a = p.Wx0[x] + p.b[0] + h0 @ p.Wh[0]
    ea = np.abs(h0) @ dWh + 1e-5  # gate pre-activations (and float32 rounding)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    i, f, g, o = sig(a[:H]), sig(a[H : 2 * H]), np.tanh(a[2 * H : 3 * H]), sig(a[3 * H :])
    ei, ef, eg, eo = ea[:H] / 4, ea[H : 2 * H] / 4, ea[2 * H : 3 * H], ea[3 * H :] / 4
    c1 = f * c0 + i * g
    ec = np.abs(c0) * ef + np.abs(g) * ei + (np.abs(i) + ei) * eg
    eh = np.abs(np.tanh(c1)) * eo + (np.abs(o) + eo) * ec + 1e-6
    bound = eh @ (np.abs(p.Wy) + dWy) + np.abs(h1) @ dWy + 1e-5
    diff = np.abs(logits[precision] - logits["fp32"])
    assert np.all(diff <= bound), (diff, bound)
    assert diff.max() > 0  # the formats do round


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("L", [1, 2])
def test_the_split_path_in_a_narrow_format_writes_the_serial_text(precision, L, monkeypatch):
    """Batch-1 sampling split across cores (units in chunks, each chunk's columns packed and,
    for int8, scaled on their own): the serial path's ids and state, bit for bit, in bf16 and
    int8; and a Switch choosing between them (engine/switch.py) for a narrow format too."""
    from charrnn.engine import threads

    monkeypatch.setattr(threads, "num_threads", lambda: 2)
    monkeypatch.setattr(sampler, "PARALLEL_MIN_HIDDEN", 4)
    m = model(L=L)
    serial = sampler.Sampler(m, 1, parallel=False, precision=precision)
    split = sampler.Sampler(m, 1, parallel=True, precision=precision)
    assert sampler.Sampler(m, 1, precision=precision).switch is not None
    for s in (serial, split):
        s.prime(np.array([1, 2, 3]))
    for n in (1, 30, 7):
        a = serial.generate(n, np.random.default_rng(n), Pick(0.9))
        b = split.generate(n, np.random.default_rng(n), Pick(0.9))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(split.h, serial.h)
        np.testing.assert_array_equal(split.c, serial.c)


def test_a_reduced_precision_needs_a_float32_model():
    m64 = Model(ModelConfig(layers=1, hidden=4, vocab_size=3), dtype=np.float64)
    with pytest.raises(ValueError, match="float32"):
        sampler.Sampler(m64, 1, precision="bf16")
    from charrnn.errors import UsageError

    with pytest.raises(UsageError, match="--precision must be fp32, bf16 or int8"):
        sampler.Sampler(model(), 1, precision="fp16")


# -- on a trained model, through the library and the command line ----------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2 x 32 LSTM trained for 150 steps on a Markov text through the command line."""
    from charrnn.cli import app
    from conftest import markov_text

    d = tmp_path_factory.mktemp("precision")
    text, _ = markov_text("abcdefgh \n", 20_000, seed=5, peaked_rows=(0, 2, 4, 6))
    (d / "c.txt").write_text(text)
    r = CliRunner().invoke(
        app,
        [
            "train",
            str(d / "c.txt"),
            "-o",
            str(d / "run"),
            "--steps",
            "150",
            "--layers",
            "2",
            "--hidden",
            "32",
            "--batch",
            "16",
            "--seq",
            "32",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.stderr
    return d


@pytest.mark.parametrize("precision", NARROW)
def test_greedy_text_and_loss_of_a_trained_model_barely_move(trained, precision):
    """Greedy text in a narrow format equals the exact text for its first 80 characters
    (the reduced logits differ by about 1e-3 here; the greedy choice flips only at a near
    tie); the loss of the reduced weights is within 0.01 nats/char of the exact loss (about
    1e-4 measured for int8 on this model, less for bf16)."""
    import charrnn

    m = charrnn.load(trained / "run")
    exact = m.sample(120, temp=0, prime="ab", seed=1)
    reduced = m.sample(120, temp=0, prime="ab", seed=1, precision=precision)
    assert reduced[:82] == exact[:82]
    text = (trained / "c.txt").read_text()[-4000:]
    base, cost = m.loss(text), m.at_precision(precision).loss(text)
    assert abs(cost - base) < 0.01
    assert m.at_precision("fp32").loss(text) == base == m.loss(text)  # m itself unchanged


@pytest.mark.parametrize("precision", NARROW)
def test_the_precision_option_of_sample_and_eval(trained, precision):
    """`sample --precision` prints CharModel.sample's text at that precision; `eval
    --precision` scores the reduced weights (its JSON says which); a format not offered is
    a usage error (exit 2) on both."""
    import charrnn
    from charrnn.cli import app

    run, text = str(trained / "run"), str(trained / "c.txt")
    r = CliRunner().invoke(
        app,
        [
            "sample",
            "-c",
            run,
            "-n",
            "100",
            "--temp",
            "0.8",
            "--seed",
            "3",
            "--prime",
            "ab",
            "--precision",
            precision,
        ],
    )
    assert r.exit_code == 0, r.stderr
    m = charrnn.load(run)
    assert r.stdout.rstrip("\n") == m.sample(100, temp=0.8, prime="ab", seed=3, precision=precision)
    scores = {}
    for prec in ("fp32", precision):
        r = CliRunner().invoke(app, ["eval", text, "-c", run, "--json", "--precision", prec])
        assert r.exit_code == 0, r.stderr
        scores[prec] = json.loads(r.stdout)
        assert scores[prec]["precision"] == prec
    assert scores[precision]["nats_per_char"] == pytest.approx(
        m.at_precision(precision).loss(open(text).read()), abs=1e-6
    )
    assert abs(scores[precision]["nats_per_char"] - scores["fp32"]["nats_per_char"]) < 0.01
    for cmd in (["sample", "-c", run, "-n", "5"], ["eval", text, "-c", run]):
        r = CliRunner().invoke(app, cmd + ["--precision", "fp16"])
        assert r.exit_code == 2 and "--precision must be fp32, bf16 or int8" in r.stderr


@pytest.mark.skipif(__import__("platform").machine() not in ("x86_64", "AMD64"), reason="reads x86 assembly")
@pytest.mark.parametrize("precision, widen", [("bf16", "vpslld"), ("int8", "vcvtdq2ps")])
def test_the_narrow_product_compiles_to_vector_instructions(precision, widen):
    """The k loop is vector code: fused multiply-adds on whole ymm/zmm registers and the
    format's widening done on vectors (a shift for bf16, a conversion of sign-extended
    lanes for int8), not a scalar loop. (A fresh, uncached compile: Numba shows no assembly
    for a function loaded from its cache.)"""
    from numba import njit

    f = njit(error_model="numpy", nogil=True)(qgemm.matmul.py_func)
    NR = P.strip_width()
    Wq, S = P.pack(np.ones((8, 3 * NR), np.float32), precision)
    f(np.ones((1, 8), np.float32), Wq, S, np.zeros((1, 3 * NR), np.float32))
    asm = next(iter(f.inspect_asm().values()))
    reg = "%zmm" if NR == 32 else "%ymm"
    fma = [line for line in asm.splitlines() if "vfmadd" in line and "ps" in line]
    assert fma and all(reg in line for line in fma)
    assert any(widen in line and reg in line for line in asm.splitlines())
