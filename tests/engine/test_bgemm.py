"""The bf16 products for training (engine/bgemm.py): the rounding against precision.bf16_bits,
the packed layout against its definition, the products against float64 on the bf16-rounded
inputs within float32 accumulation error, at odd shapes and every row count a tile leaves over,
and the compiled loop reading as vdpbf16ps on zmm registers. Skipped on a CPU without
AVX512-BF16."""

import numpy as np
import pytest

from charrnn.engine import bgemm as BG, precision as P

pytestmark = pytest.mark.skipif(
    not BG.available(), reason="this CPU has no AVX512-BF16 (vdpbf16ps), which engine/bgemm.py needs"
)
EPS32 = float(np.finfo(np.float32).eps)
NR = BG.NR


def rounded(X):
    """float64 of X's bf16 rounding (the values the products multiply)."""
    return P.bf16_widen(P.bf16_bits(X)).astype(np.float64).reshape(np.shape(X))


def within_accumulation(C, C0, A, B):
    """C = C0 + A @ B, A and B bf16-rounded float64, to float32 accumulation: each of the
    K/2 instructions rounds two exact products into the sum, (K + 2) eps |C0 + |A| @ |B||
    bounds it."""
    bound = (A.shape[1] + 2) * EPS32 * (np.abs(C0) + np.abs(A) @ np.abs(B))
    err = np.abs(C.astype(np.float64) - (C0 + A @ B))
    assert np.all(err <= bound), float((err / np.maximum(bound, 1e-300)).max())


def test_rounding_agrees_with_precision_bit_for_bit_and_odd_rows_get_a_zero():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((7, 33)) * 10.0 ** rng.integers(-30, 30, (7, 33))).astype(np.float32)
    X[0, :6] = [1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-8 + 2**-20, -0.0, -2.0]  # ties, signs
    out = np.full(7 * 34, 0xFFFF, np.uint16)
    BG.convert_rows(X, out)
    out = out.reshape(7, 34)
    np.testing.assert_array_equal(out[:, :33], P.bf16_bits(X))
    assert not out[:, 33].any()
    np.testing.assert_array_equal(out[0, :6], [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0x8000, 0xC000])
    strided = np.full(7 * 34, 0xFFFF, np.uint16)  # a transposed (non-contiguous) input
    BG.convert_rows(np.ascontiguousarray(X.T).T, strided)
    np.testing.assert_array_equal(strided.reshape(7, 34), out)


@pytest.mark.parametrize("Kd", [1, 2, 9])
def test_packed_layout_holds_column_pairs_along_k(Kd):
    rng = np.random.default_rng(Kd)
    W = rng.standard_normal((Kd, 2 * NR)).astype(np.float32)
    out = np.full(BG.even(Kd) * 2 * NR, 0xFFFF, np.uint16)
    BG.pack(W, out)
    bits = np.zeros((BG.even(Kd), 2 * NR), np.uint16)
    bits[:Kd] = P.bf16_bits(W)
    # strip s, pair p, vector v, lane j, half h  <-  W[2p + h, s*NR + v*16 + j]
    want = bits.reshape(Kd // 2 + Kd % 2, 2, 2, 2, NR // 2).transpose(2, 0, 3, 4, 1)
    np.testing.assert_array_equal(out, want.reshape(-1))
    half = np.full_like(out, 0xFFFF)  # a share of the strips leaves the rest untouched
    BG.pack_strips(W, half, 1, 2)
    np.testing.assert_array_equal(half[out.size // 2 :], out[out.size // 2 :])
    assert (half[: out.size // 2] == 0xFFFF).all()


@pytest.mark.parametrize("Kd", [1, 2, 7, 33])
@pytest.mark.parametrize("acc", [False, True])
def test_product_equals_float64_of_the_rounded_inputs(Kd, acc):
    """Every row count from 1 to 13 (tiles of 1 to 6 rows), one to three strips, odd Kd."""
    rng = np.random.default_rng(Kd + 100 * acc)
    for N in (NR, 3 * NR):
        W = rng.standard_normal((Kd, N)).astype(np.float32)
        Bp = np.zeros(BG.even(Kd) * N, np.uint16)
        BG.pack(W, Bp)
        for m in range(1, 14):
            A = rng.standard_normal((m, Kd)).astype(np.float32)
            Ab = np.zeros(m * BG.even(Kd), np.uint16)
            BG.convert_rows(A, Ab)
            C0 = rng.standard_normal((m, N)).astype(np.float32) if acc else np.zeros((m, N), np.float32)
            C = C0.copy()
            BG.matmul(Ab, Bp, C, acc)
            within_accumulation(C, C0.astype(np.float64), rounded(A), rounded(W))


def test_a_window_of_rows_goes_in_blocks():
    """More rows than one block of A (bgemm.matmul's MB): the blocks join without a seam."""
    rng = np.random.default_rng(3)
    Kd, N = 512, NR
    m = 2 * BG.A_BLOCK // Kd + 7
    A, W = rng.standard_normal((m, Kd)).astype(np.float32), rng.standard_normal((Kd, N)).astype(np.float32)
    Ab, Bp = np.zeros(m * Kd, np.uint16), np.zeros(Kd * N, np.uint16)
    BG.convert_rows(A, Ab)
    BG.pack(W, Bp)
    C = np.full((m, N), np.nan, np.float32)
    BG.matmul(Ab, Bp, C, False)
    within_accumulation(C, np.zeros((m, N)), rounded(A), rounded(W))


@pytest.mark.parametrize("M, H", [(1, 1), (5, 7), (BG.KC + 3, 13), (2 * BG.KC, 6)])
def test_weight_gradient_adds_x_transpose_g(M, H):
    """C += X^T G over M rows, in blocks of KC rows (an odd last block), H rows of C."""
    rng = np.random.default_rng(M + H)
    N = 2 * NR
    X, G = rng.standard_normal((M, H)).astype(np.float32), rng.standard_normal((M, N)).astype(np.float32)
    C0 = rng.standard_normal((H, N)).astype(np.float32)
    kc = BG.even(min(BG.KC, M))
    Xp, Gp = np.zeros(H * kc, np.uint16), np.zeros(kc * N, np.uint16)
    C = C0.copy()
    BG.matmul_tn_acc(X, G, C, Xp, Gp)
    within_accumulation(C, C0.astype(np.float64), rounded(X).T, rounded(G))


@pytest.mark.skipif(__import__("platform").machine() not in ("x86_64", "AMD64"), reason="reads x86 assembly")
def test_the_product_compiles_to_vdpbf16ps_on_zmm_registers():
    """The k loop is vdpbf16ps on whole zmm registers, and no float32 multiply-add stands in for
    it. (A fresh, uncached compile: Numba shows no assembly for a function from its cache.)"""
    from numba import njit

    f = njit(error_model="numpy", nogil=True)(BG.matmul.py_func)
    Ab, Bp = np.zeros(6 * 8, np.uint16), np.zeros(8 * NR, np.uint16)
    f(Ab, Bp, np.zeros((6, NR), np.float32), False)
    asm = "\n".join(f.inspect_asm().values())
    dots = [line for line in asm.splitlines() if "vdpbf16ps" in line]
    assert len(dots) >= 12 and all("%zmm" in line for line in dots)
    assert not any("vfmadd" in line for line in asm.splitlines())
