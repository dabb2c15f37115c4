"""Packed matrix products for the recurrent layers, written with explicit vectors.

A recurrent step multiplies a few rows (the B streams of a part) by the same weight matrix W
(H x 4H for an LSTM) at every one of a window's T time steps. A BLAS call re-packs W at each of
those calls; here W is packed once per window (`pack`) and `matmul` runs a register-tiled loop
over it (after the GotoBLAS/BLIS micro-kernel design):

  packed W: strips of NR = 2 vectors of columns; strip s holds W[:, s*NR:(s+1)*NR] row by row,
            so the loop over k reads it contiguously;
  tile:     MR = 6 rows x NR columns of the product, 12 vector accumulators held in registers
            across the whole k loop; at each k, two vector loads of W, one broadcast of A[i, k]
            per row and 12 fused multiply-adds; m rows go as ceil(m / 6) tiles as even as
            they go (`tiles`), since a one-row tile's two accumulators wait on each other.

The vectors are vec.py's, the widest the host's registers hold (64 bytes with AVX-512, else
32), so NR is 32 floats with AVX-512 and 16 with AVX2.

The same packed layout serves a window's larger products: the layers' input projections and
the gradients sent to the layer below (`matmul`, over blocks of A's rows that stay in L2
while every strip passes over them), and the weight gradients dW += X^T dG (`matmul_tn_acc`,
which packs dG a block of rows at a time and reads X in place). On a Zen 4 core the first two
ran at 98-114 GFLOP/s against OpenBLAS's 94-103 for the same calls; the weight gradient at
90-105, level with OpenBLAS writing straight into its output and ahead of what the kernel did
before, OpenBLAS into a temporary and then an add (benchmarks/profile_train.py).

Flat buffers: packed matrices are 1-d arrays of Kd * N elements whatever the width, so callers
allocate them without knowing it. Training packs only matrices whose N is a multiple of NR
(`packable`) and multiplies the others with np.dot; the sampler pads the last strip with zero
columns (`padded`) and calls no BLAS at all.
"""

from numba import njit

from . import sharedcache  # noqa: F401  (Numba's cache shared by processes: see there)
from .vec import lanes, vfma, vload, vsplat, vstore, vzero

kernel = njit(cache=True, error_model="numpy", nogil=True)
A_BLOCK = 131072  # elements of A (512 KiB of float32) that matmul keeps as one block of rows
MR = 6  # rows of a full tile: 12 accumulators + 2 loads + 1 broadcast fit 16 ymm registers

# ---------------------------------------------------------------------------------------------


@kernel
def strip_width(a):
    """NR: columns per packed strip for arrays like a (two vectors)."""
    return 2 * lanes(a)


@kernel
def packable(a, N):
    """Whether a product with N columns can use a packed matrix of a's type."""
    return N % strip_width(a) == 0


@kernel
def padded(a, N):
    """N rounded up to whole strips: the width of a padded packed matrix and of its products."""
    NR = strip_width(a)
    return (N + NR - 1) // NR * NR


@kernel
def strips(W, out):
    """The packed strips out holds for W (Kd, N): N / NR, or padded(N) / NR."""
    return out.size // (W.shape[0] * strip_width(out))


@kernel
def pack(W, out):
    """W (Kd, N), any strides -> out (Kd * Np,): strip s = W[:, s*NR:(s+1)*NR], row by row;
    Np = N, or padded(N) with zero columns when out has room for them."""
    pack_strips(W, out, 0, strips(W, out))


@kernel
def pack_strips(W, out, s0, s1):
    """pack(W, out) for strips s0 <= s < s1 only (the rest of out untouched): the threads of a
    window each pack a share of every matrix. A whole strip's rows are copied without a
    bounds test, so a row-major W's go as vector copies."""
    NR = strip_width(out)
    Kd, N = W.shape
    for s in range(max(s0, 0), s1):  # indices provably >= 0: no wrap-around test, vectorised
        c0 = s * NR
        if c0 + NR <= N:
            for k in range(Kd):
                base = (s * Kd + k) * NR
                for j in range(NR):
                    out[base + j] = W[k, c0 + j]
        else:
            for k in range(Kd):
                base = (s * Kd + k) * NR
                for j in range(NR):
                    out[base + j] = W[k, c0 + j] if c0 + j < N else 0


@kernel
def pack_rows(W, out, s0, s1):
    """pack_strips for a C-contiguous W (Kd, N) with N a whole number of strips, in vector
    copies (indexing a 2-d W element by element from a run-time strip, LLVM kept a scalar
    loop: 3x slower)."""
    NR = strip_width(out)
    V = lanes(out)
    Kd, N = W.shape
    for s in range(s0, s1):
        for k in range(Kd):
            src = k * N + s * NR
            dst = (s * Kd + k) * NR
            vstore(out, dst, vload(W, src))
            vstore(out, dst + V, vload(W, src + V))


@njit(inline="always", error_model="numpy", nogil=True)
def _tile(A, a, ra, ka, Wp, w, kc, C, o, rows, acc):
    """One register tile: rows (<= 6) rows of C from o (row stride C's width), two vectors
    wide, = (or += with acc) sum over k < kc of A's element a + r*ra + k*ka (row r) times the
    packed strip's row k (two vectors at w + k*NR). rows and acc are constants after inlining,
    so the unused accumulators and branches compile away. matmul reads A's rows (ra the row
    length, ka 1); matmul_tn_acc reads X's columns in place (ra 1, ka the row length)."""
    N = C.shape[1]
    V = lanes(C)
    NR = 2 * V
    c00 = c01 = c10 = c11 = c20 = c21 = vzero(C)
    c30 = c31 = c40 = c41 = c50 = c51 = vzero(C)
    if acc:
        c00 = vload(C, o)
        c01 = vload(C, o + V)
        if rows > 1:
            c10 = vload(C, o + N)
            c11 = vload(C, o + N + V)
        if rows > 2:
            c20 = vload(C, o + 2 * N)
            c21 = vload(C, o + 2 * N + V)
        if rows > 3:
            c30 = vload(C, o + 3 * N)
            c31 = vload(C, o + 3 * N + V)
        if rows > 4:
            c40 = vload(C, o + 4 * N)
            c41 = vload(C, o + 4 * N + V)
        if rows > 5:
            c50 = vload(C, o + 5 * N)
            c51 = vload(C, o + 5 * N + V)
    for _ in range(kc):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + V)
        w += NR
        x = vsplat(A, a)
        c00 = vfma(x, w0, c00)
        c01 = vfma(x, w1, c01)
        if rows > 1:
            x = vsplat(A, a + ra)
            c10 = vfma(x, w0, c10)
            c11 = vfma(x, w1, c11)
        if rows > 2:
            x = vsplat(A, a + 2 * ra)
            c20 = vfma(x, w0, c20)
            c21 = vfma(x, w1, c21)
        if rows > 3:
            x = vsplat(A, a + 3 * ra)
            c30 = vfma(x, w0, c30)
            c31 = vfma(x, w1, c31)
        if rows > 4:
            x = vsplat(A, a + 4 * ra)
            c40 = vfma(x, w0, c40)
            c41 = vfma(x, w1, c41)
        if rows > 5:
            x = vsplat(A, a + 5 * ra)
            c50 = vfma(x, w0, c50)
            c51 = vfma(x, w1, c51)
        a += ka
    vstore(C, o, c00)
    vstore(C, o + V, c01)
    if rows > 1:
        vstore(C, o + N, c10)
        vstore(C, o + N + V, c11)
    if rows > 2:
        vstore(C, o + 2 * N, c20)
        vstore(C, o + 2 * N + V, c21)
    if rows > 3:
        vstore(C, o + 3 * N, c30)
        vstore(C, o + 3 * N + V, c31)
    if rows > 4:
        vstore(C, o + 4 * N, c40)
        vstore(C, o + 4 * N + V, c41)
    if rows > 5:
        vstore(C, o + 5 * N, c50)
        vstore(C, o + 5 * N + V, c51)


@njit(error_model="numpy", nogil=True)
def _tile_any(A, a, ra, ka, Wp, w, kc, C, o, rows, acc):
    """_tile for a row count known only at run time (1 to 6). A function of its own, called, not
    inlined: inlined into each of its callers, its six inlined tiles made Numba copy its whole
    IR once per block of it (a copy of every variable each time): 10 s of a 15 s compile."""
    if rows == 6:
        _tile(A, a, ra, ka, Wp, w, kc, C, o, 6, acc)
    elif rows == 5:
        _tile(A, a, ra, ka, Wp, w, kc, C, o, 5, acc)
    elif rows == 4:
        _tile(A, a, ra, ka, Wp, w, kc, C, o, 4, acc)
    elif rows == 3:
        _tile(A, a, ra, ka, Wp, w, kc, C, o, 3, acc)
    elif rows == 2:
        _tile(A, a, ra, ka, Wp, w, kc, C, o, 2, acc)
    else:
        _tile(A, a, ra, ka, Wp, w, kc, C, o, 1, acc)


@njit(inline="always", error_model="numpy", nogil=True)
def _row_strips(A, Wp, C, s):
    """C[0, strips s..s+3] = A[0] @ W[:, strips s..s+3]: one row, four strips at once, so eight
    accumulators are in flight (one strip's two would wait on each other's latency)."""
    Kd = A.shape[1]
    V = lanes(C)
    NR = 2 * V
    span = Kd * NR  # elements in one packed strip
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = vzero(C)
    w = s * span
    for k in range(Kd):
        x = vsplat(A, k)
        c0 = vfma(x, vload(Wp, w), c0)
        c1 = vfma(x, vload(Wp, w + V), c1)
        c2 = vfma(x, vload(Wp, w + span), c2)
        c3 = vfma(x, vload(Wp, w + span + V), c3)
        c4 = vfma(x, vload(Wp, w + 2 * span), c4)
        c5 = vfma(x, vload(Wp, w + 2 * span + V), c5)
        c6 = vfma(x, vload(Wp, w + 3 * span), c6)
        c7 = vfma(x, vload(Wp, w + 3 * span + V), c7)
        w += NR
    o = s * NR
    vstore(C, o, c0)
    vstore(C, o + V, c1)
    vstore(C, o + NR, c2)
    vstore(C, o + NR + V, c3)
    vstore(C, o + 2 * NR, c4)
    vstore(C, o + 2 * NR + V, c5)
    vstore(C, o + 3 * NR, c6)
    vstore(C, o + 3 * NR + V, c7)


@kernel
def matmul(A, Wp, C):
    """C (m, N) = A (m, Kd) @ W, with Wp = pack(W); A and C C-contiguous; N a whole number of
    strips (for a padded Wp, C has the padded width)."""
    m, Kd = A.shape
    N = C.shape[1]
    NR = strip_width(C)
    S = N // NR
    if m == 1:  # a batch-1 step (sampling): four strips at a time
        s = 0
        while s + 4 <= S:
            _row_strips(A, Wp, C, s)
            s += 4
        for t in range(s, S):
            _tile(A, 0, Kd, 1, Wp, t * Kd * NR, Kd, C, t * NR, 1, False)
        return
    MB = m  # rows per block: a window's many rows go in blocks of A that stay in L2
    if m * Kd > A_BLOCK:  # while every strip passes over them; a step's few rows are one
        MB = max(MR, A_BLOCK // 2 // Kd // MR * MR)
    for b0 in range(0, m, MB):
        b1 = min(m, b0 + MB)
        n, base, extra = tiles(b1 - b0)
        for s in range(S):
            i0 = b0
            for t in range(n):
                r = base + 1 if t < extra else base
                _tile_any(A, i0 * Kd, Kd, 1, Wp, s * Kd * NR, Kd, C, i0 * N + s * NR, r, False)
                i0 += r


@njit(inline="always", error_model="numpy", nogil=True)
def tiles(m):
    """(n, base, extra): m rows as n tiles of at most MR rows, as even as they go, the first
    extra tiles with base + 1 rows and the rest with base. 25 rows make five tiles of 5, not
    four of 6 and one of 1, whose two accumulators wait on each other's latency."""
    n = (m + MR - 1) // MR
    base = m // n
    return n, base, m - base * n


# ---------------------------------------------------------------------------------------------
# Weight gradients: C (H, N) += X^T @ G over a window's rows


KC = 512  # rows of X and G per block: a packed strip of G (KC x NR) is reused by every tile


@kernel
def matmul_tn_acc(X, G, C, Gp):
    """C (H, N) += X (M, H)^T @ G (M, N), all C-contiguous, N a whole number of strips
    (packable): a weight gradient dW += X^T dG over a window's M = T*B rows. G is packed a
    block of KC rows at a time into Gp (at least min(KC, M) * N elements); X is read in
    place."""
    M, Hx = X.shape
    N = C.shape[1]
    NR = strip_width(C)
    S = N // NR
    V = lanes(C)
    n, base, extra = tiles(Hx)
    for k0 in range(0, M, KC):
        kc = min(KC, M - k0)
        for s in range(S):  # pack this block of G
            for k in range(kc):
                src = (k0 + k) * N + s * NR
                dst = (s * kc + k) * NR
                vstore(Gp, dst, vload(G, src))
                vstore(Gp, dst + V, vload(G, src + V))
        for s in range(S):
            i0 = 0
            for t in range(n):
                r = base + 1 if t < extra else base
                _tile_any(X, k0 * Hx + i0, 1, Hx, Gp, s * kc * NR, kc, C, i0 * N + s * NR, r, True)
                i0 += r
