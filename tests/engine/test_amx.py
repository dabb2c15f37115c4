"""The bf16 products on AMX tiles (engine/amx.py): against float64 on the bf16-rounded inputs
within float32 accumulation error, for every row count a block leaves over, k padded to whole
tiles, accumulating or not, the weight gradient over blocks of rows, and the compiled kernel
reading as TDPBF16PS. Skipped where the CPU or the kernel gives no AMX."""

import numpy as np
import pytest

from charrnn.engine import amx, bgemm as BG, precision as P

pytestmark = pytest.mark.skipif(
    not amx.available(), reason="no AMX-BF16 here (the CPU lacks it, or Linux did not grant the tiles)"
)
EPS32 = float(np.finfo(np.float32).eps)
NR = BG.NR


def rounded(X):
    return P.bf16_widen(P.bf16_bits(X)).astype(np.float64).reshape(np.shape(X))


def within_accumulation(C, C0, A, B):
    bound = (A.shape[1] + 2) * EPS32 * (np.abs(C0) + np.abs(A) @ np.abs(B))
    err = np.abs(C.astype(np.float64) - (C0 + A @ B))
    assert np.all(err <= bound), float((err / np.maximum(bound, 1e-300)).max())


@pytest.mark.parametrize("Kd", [1, 32, 70])
@pytest.mark.parametrize("acc", [False, True])
def test_product_equals_float64_of_the_rounded_inputs(Kd, acc):
    """Row counts 1 to 40 (a block of 32, then every tail of one or two halves), one and two
    strips, k not a whole tile (zeros pad it)."""
    rng = np.random.default_rng(Kd + 100 * acc)
    cfg = amx.config_buffer()
    Kp = amx.padded(Kd)
    for N in (NR, 2 * NR):
        W = rng.standard_normal((Kd, N)).astype(np.float32)
        Bp = np.zeros(Kp * N, np.uint16)
        BG.pack(W, Bp)
        for m in list(range(1, 18)) + [31, 32, 33, 40]:
            A = rng.standard_normal((m, Kd)).astype(np.float32)
            Ab = np.zeros(m * Kp, np.uint16)
            BG.convert_rows(A, Ab)
            C0 = rng.standard_normal((m, N)).astype(np.float32) if acc else np.zeros((m, N), np.float32)
            C = C0.copy() if acc else np.full((m, N), np.nan, np.float32)
            amx.matmul(Ab, Bp, C, acc, cfg)
            within_accumulation(C, C0.astype(np.float64), rounded(A), rounded(W))


def test_amx_and_vdpbf16ps_agree_on_the_same_layouts():
    """bgemm.matmul reads the tiles' padded layouts as they are (extra zero pairs)."""
    rng = np.random.default_rng(5)
    m, Kd, N = 9, 40, 2 * NR
    Kp = amx.padded(Kd)
    A, W = rng.standard_normal((m, Kd)).astype(np.float32), rng.standard_normal((Kd, N)).astype(np.float32)
    Ab, Bp = np.zeros(m * Kp, np.uint16), np.zeros(Kp * N, np.uint16)
    BG.convert_rows(A, Ab)
    BG.pack(W, Bp)
    C1, C2 = np.zeros((m, N), np.float32), np.zeros((m, N), np.float32)
    amx.matmul(Ab, Bp, C1, False, amx.config_buffer())
    BG.matmul(Ab, Bp, C2, False)
    within_accumulation(C1, np.zeros((m, N)), rounded(A), rounded(W))
    np.testing.assert_allclose(C1, C2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("M, H", [(1, 1), (5, 7), (BG.KC + 3, 33), (2 * BG.KC, 16)])
def test_weight_gradient_adds_x_transpose_g(M, H):
    rng = np.random.default_rng(M + H)
    N = 2 * NR
    X, G = rng.standard_normal((M, H)).astype(np.float32), rng.standard_normal((M, N)).astype(np.float32)
    C0 = rng.standard_normal((H, N)).astype(np.float32)
    kp = amx.padded(min(BG.KC, M))
    C = C0.copy()
    amx.matmul_tn_acc(X, G, C, np.zeros(H * kp, np.uint16), np.zeros(kp * N, np.uint16), amx.config_buffer())
    within_accumulation(C, C0.astype(np.float64), rounded(X).T, rounded(G))


@pytest.mark.skipif(__import__("platform").machine() not in ("x86_64", "AMD64"), reason="reads x86 assembly")
def test_the_product_compiles_to_tile_instructions():
    from numba import njit

    f = njit(error_model="numpy", nogil=True)(amx.matmul.py_func)
    f(
        np.zeros(6 * 32, np.uint16),
        np.zeros(32 * NR, np.uint16),
        np.zeros((6, NR), np.float32),
        False,
        amx.config_buffer(),
    )
    asm = "\n".join(f.inspect_asm().values())
    for op in ("tdpbf16ps", "tileloadd", "tilestored", "ldtilecfg", "tilerelease"):
        assert op in asm, op
