"""Packed bf16 products for training: C (float32) = or += A @ B, with A and B rounded to bf16
(8 significant bits) and every sum kept in float32, by AVX512-BF16's vdpbf16ps.

vdpbf16ps takes two vectors of 32 bf16 values and a vector of 16 float32 sums: in each 32-bit
lane it multiplies the lane's two bf16 halves of one operand by those of the other and adds both
products to the lane's sum. One instruction is then two steps of k at once, and both operands
hold their values in pairs along k:

  A:   bf16 (m, Kp) row-major, Kp = Kd rounded up to even (zero columns after Kd; amx.py pads
       to whole tiles of 32, which these products read as they are): the 32-bit word at
       element i*Kp + 2p holds A[i, 2p] and A[i, 2p+1], broadcast to every lane;
  Bp:  gemm.py's strips of NR = 32 columns (two vectors), strip s holding B[:, s*NR:(s+1)*NR]
       a pair of rows at a time: pair p of strip s is 64 bf16 values, column c0 + j's pair
       (B[2p, c0+j], B[2p+1, c0+j]) at 2j, 2j+1 for j < 16 (the first vector), then the same
       for columns c0+16 .. c0+31 (the second).

The tile is gemm.py's: MR = 6 rows x two vectors of columns, 12 accumulators in registers across
the k loop; per pair of k, two loads of Bp, one broadcast of A's pair per row and 12 vdpbf16ps.
`matmul` multiplies rows of A converted beforehand (`convert_rows`) by a packed B (`pack`);
`matmul_tn_acc` adds X^T @ G over a window's rows, converting and packing blocks of both, as
gemm.matmul_tn_acc does for float32.

Rounding to bf16 is to nearest, ties to even, by integer arithmetic on the float32 bits, as
precision.bf16_bits does (so the two agree bit for bit): a loop LLVM vectorises.

Only for a CPU that has the instruction (`available`); the vectors are 16 float32 lanes
whatever vec.py would choose. Elsewhere the kernels still compile (the training kernels hold
this path beside the float32 one, chosen at run time), with a trap in place of the instruction.
"""

import numpy as np
from numba import njit

from .bf16ops import FEATURE, LANES, bf16, has_features, pload, psplat, sload, sstore, szero, vdot
from .gemm import A_BLOCK, KC, MR, tiles

kernel = njit(cache=True, error_model="numpy", nogil=True)
NR = 2 * LANES  # columns of a packed strip

_available = None


def available():
    """Whether the CPU Numba compiles for has AVX512-BF16 (vdpbf16ps)."""
    global _available
    if _available is None:
        _available = has_features(FEATURE)
    return _available


# ---------------------------------------------------------------------------------------------
# Conversion and packing


@kernel
def even(n):
    """n rounded up to even: Kp for a k dimension of n."""
    return n + (n & 1)


@kernel
def convert_rows(X, out):
    """X (m, Kd) float32, any strides -> out (m * Kp,) uint16: row i of X in bf16 at i*Kp, zeros
    after it to Kp = out.size // m >= Kd (A's layout for matmul; even(Kd) unless a product
    wants more, as the tiles of amx.py want whole multiples of 32)."""
    m, Kd = X.shape
    Kp = out.size // m
    for i in range(m):
        base = i * Kp
        for k in range(Kd):
            out[base + k] = bf16(X[i, k])
        for k in range(Kd, Kp):
            out[base + k] = 0


@kernel
def pack(W, out):
    """W (Kd, N) float32, any strides, N whole strips -> out (Kp * N,) uint16 in Bp's layout,
    rows Kd..Kp-1 zeros, Kp = out.size // N (even, >= Kd)."""
    pack_strips(W, out, 0, W.shape[1] // NR)


@kernel
def pack_strips(W, out, s0, s1):
    """pack(W, out) for strips s0 <= s < s1 only (the threads of a window each pack a share).
    Each pair of bf16 values is made and stored as one 32-bit word: two stores of 16 bits a
    stride apart ran 1.4x (a transposed W) to 2.7x (a row-major one) slower."""
    Kd, N = W.shape
    P = out.size // N // 2
    words = out.view(np.uint32)
    for s in range(s0, s1):
        c0 = s * NR
        for p in range(P):
            base = (s * P + p) * NR
            k = 2 * p
            if k + 1 < Kd:
                for j in range(NR):
                    words[base + j] = np.uint32(bf16(W[k, c0 + j])) | (
                        np.uint32(bf16(W[k + 1, c0 + j])) << 16
                    )
            elif k < Kd:
                for j in range(NR):
                    words[base + j] = np.uint32(bf16(W[k, c0 + j]))
            else:
                for j in range(NR):
                    words[base + j] = 0


# ---------------------------------------------------------------------------------------------
# The products


@njit(inline="always", error_model="numpy", nogil=True)
def _tile(A, a, ra, Bp, w, P, C, o, rows, acc):
    """One register tile: rows (<= 6) rows of C from o (row stride C's width), two vectors wide,
    = (or += with acc) the sum over P pairs of k of A's pair at a + r*ra + 2p (row r) times the
    packed strip's pair p (at w + 2p*NR). rows and acc are constants after inlining."""
    N = C.shape[1]
    c00 = c01 = c10 = c11 = c20 = c21 = szero()
    c30 = c31 = c40 = c41 = c50 = c51 = szero()
    if acc:
        c00 = sload(C, o)
        c01 = sload(C, o + LANES)
        if rows > 1:
            c10 = sload(C, o + N)
            c11 = sload(C, o + N + LANES)
        if rows > 2:
            c20 = sload(C, o + 2 * N)
            c21 = sload(C, o + 2 * N + LANES)
        if rows > 3:
            c30 = sload(C, o + 3 * N)
            c31 = sload(C, o + 3 * N + LANES)
        if rows > 4:
            c40 = sload(C, o + 4 * N)
            c41 = sload(C, o + 4 * N + LANES)
        if rows > 5:
            c50 = sload(C, o + 5 * N)
            c51 = sload(C, o + 5 * N + LANES)
    for _ in range(P):
        b0 = pload(Bp, w)
        b1 = pload(Bp, w + NR)
        w += 2 * NR
        x = psplat(A, a)
        c00 = vdot(c00, x, b0)
        c01 = vdot(c01, x, b1)
        if rows > 1:
            x = psplat(A, a + ra)
            c10 = vdot(c10, x, b0)
            c11 = vdot(c11, x, b1)
        if rows > 2:
            x = psplat(A, a + 2 * ra)
            c20 = vdot(c20, x, b0)
            c21 = vdot(c21, x, b1)
        if rows > 3:
            x = psplat(A, a + 3 * ra)
            c30 = vdot(c30, x, b0)
            c31 = vdot(c31, x, b1)
        if rows > 4:
            x = psplat(A, a + 4 * ra)
            c40 = vdot(c40, x, b0)
            c41 = vdot(c41, x, b1)
        if rows > 5:
            x = psplat(A, a + 5 * ra)
            c50 = vdot(c50, x, b0)
            c51 = vdot(c51, x, b1)
        a += 2
    sstore(C, o, c00)
    sstore(C, o + LANES, c01)
    if rows > 1:
        sstore(C, o + N, c10)
        sstore(C, o + N + LANES, c11)
    if rows > 2:
        sstore(C, o + 2 * N, c20)
        sstore(C, o + 2 * N + LANES, c21)
    if rows > 3:
        sstore(C, o + 3 * N, c30)
        sstore(C, o + 3 * N + LANES, c31)
    if rows > 4:
        sstore(C, o + 4 * N, c40)
        sstore(C, o + 4 * N + LANES, c41)
    if rows > 5:
        sstore(C, o + 5 * N, c50)
        sstore(C, o + 5 * N + LANES, c51)


@njit(error_model="numpy", nogil=True)
def _tile_any(A, a, ra, Bp, w, P, C, o, rows, acc):
    """_tile for a row count known only at run time (1 to 6); called, not inlined (gemm.py's
    _tile_any says why)."""
    if rows == 6:
        _tile(A, a, ra, Bp, w, P, C, o, 6, acc)
    elif rows == 5:
        _tile(A, a, ra, Bp, w, P, C, o, 5, acc)
    elif rows == 4:
        _tile(A, a, ra, Bp, w, P, C, o, 4, acc)
    elif rows == 3:
        _tile(A, a, ra, Bp, w, P, C, o, 3, acc)
    elif rows == 2:
        _tile(A, a, ra, Bp, w, P, C, o, 2, acc)
    else:
        _tile(A, a, ra, Bp, w, P, C, o, 1, acc)


@kernel
def matmul(A, Bp, C, acc):
    """C (m, N) = (or += with acc) A @ B: A (m * Kp,) bf16 rows (convert_rows), Bp = pack(B)
    for B (Kd, N), C float32 C-contiguous with N whole strips; Kp = Bp.size // N."""
    m, N = C.shape
    S = N // NR
    Kp = Bp.size // N
    P = Kp // 2
    MB = m  # rows per block: a window's many rows go in blocks of A that stay in L2
    if m * Kp > 2 * A_BLOCK:  # (A_BLOCK counts float32 elements; these are half the size)
        MB = max(MR, A_BLOCK // Kp // MR * MR)
    for b0 in range(0, m, MB):
        b1 = min(m, b0 + MB)
        n, base, extra = tiles(b1 - b0)
        for s in range(S):
            i0 = b0
            for t in range(n):
                r = base + 1 if t < extra else base
                _tile_any(A, i0 * Kp, Kp, Bp, s * P * 2 * NR, P, C, i0 * N + s * NR, r, acc)
                i0 += r


@kernel
def matmul_tn_acc(X, G, C, Xp, Gp):
    """C (H, N) += X (M, H)^T @ G (M, N) in bf16 products: a weight gradient dW += X^T dG over
    a window's M = T*B rows. X, G float32 C-contiguous, N whole strips. A block of KC rows at a
    time, X's columns are converted into Xp (at least H * even(min(KC, M)) elements) as rows of
    A, and G's rows packed into Gp (at least even(min(KC, M)) * N)."""
    M, Hx = X.shape
    N = C.shape[1]
    S = N // NR
    n, base, extra = tiles(Hx)
    for k0 in range(0, M, KC):
        kc = min(KC, M - k0)
        kp = even(kc)
        convert_rows(X[k0 : k0 + kc].T, Xp[: Hx * kp])
        pack(G[k0 : k0 + kc], Gp[: kp * N])
        P = kp // 2
        for s in range(S):
            i0 = 0
            for t in range(n):
                r = base + 1 if t < extra else base
                _tile_any(Xp, i0 * kp, kp, Gp, s * P * 2 * NR, P, C, i0 * N + s * NR, r, True)
                i0 += r
