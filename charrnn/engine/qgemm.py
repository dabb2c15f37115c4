"""Packed products over weights stored in fewer bytes: bf16 (2 bytes) or int8 (1 byte) per
weight, widened to float32 in registers, accumulated in float32.

A batch-1 sampling step is bound by reading its weights (sampler.py); storing them in half or a
quarter of the bytes lets the same loop run up to two or four times as many steps a second.
The layout is gemm.py's, one element per weight: strips of NR = 2 vectors of columns, strip s
holding W[:, s*NR:(s+1)*NR] row by row, padded with zero columns to whole strips. Two formats:

  bf16: the top 16 bits of each float32 weight (rounded to nearest, ties to even; precision.py
        makes them). Within a strip row the two vectors' columns are interleaved, so that one
        32-bit lane holds column j in its low half and column j + V in its high half: one load
        of V 32-bit lanes and two integer operations (a shift left by 16, a mask of the high
        half) give both vectors as float32, with no conversion instruction.
  int8: round(W / scale) per column, scale = max |W[:, j]| / 127: a load that sign-extends
        8-bit to 32-bit lanes and a conversion to float32 per vector.

Every format has a per-column scale (ones for bf16), applied once per output column after
the k loop, while the accumulators are still in registers. Nothing here is specific to one
vendor: the vectors are gemm's (the widest the host offers).
"""

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from . import vec
from .gemm import strip_width
from .vec import lanes, vfma, vload, vsplat, vstore, vzero

kernel = njit(cache=True, error_model="numpy", nogil=True)
MR = 4  # rows of a tile: 8 accumulators + 2 widened loads + 1 broadcast


def _narrow(a):
    if not (isinstance(a, types.Array) and a.layout == "C" and a.dtype in (types.uint16, types.int8)):
        raise TypeError(f"expected a C-contiguous uint16 (bf16) or int8 array, got {a}")


@intrinsic
def wpair(typingctx, Wq, i, C):
    """The two float32 vectors (columns 0..V-1 and V..2V-1 of a strip row) held by Wq's
    elements i, i+1, ..., i + 2V - 1, widened; C (float32) gives the vector type."""
    _narrow(Wq)
    vt = vec._vec_of(C)
    V = vt.lanes
    bf16 = Wq.dtype == types.uint16

    def codegen(context, builder, sig, args):
        p = vec._address(context, builder, sig.args[0], args[0], args[1])
        ft = context.get_value_type(vt)
        i32 = ir.IntType(32)
        iv = ir.VectorType(i32, V)
        if bf16:
            x = builder.load(builder.bitcast(p, iv.as_pointer()), align=2)
            lo = builder.shl(x, ir.Constant(iv, [16] * V))
            hi = builder.and_(x, ir.Constant(iv, [-65536] * V))  # 0xFFFF0000
            a, b = builder.bitcast(lo, ft), builder.bitcast(hi, ft)
        else:  # two loads that sign-extend (vpmovsxbd from memory), one per vector
            bv = ir.VectorType(ir.IntType(8), V).as_pointer()
            halves = []
            for h in range(2):
                q = builder.gep(p, [ir.Constant(i32, h * V)])
                x = builder.load(builder.bitcast(q, bv), align=1)
                halves.append(builder.sitofp(builder.sext(x, iv), ft))
            a, b = halves
        return context.make_tuple(builder, sig.return_type, [a, b])

    return types.UniTuple(vt, 2)(Wq, i, C), codegen


@intrinsic
def vmul(typingctx, x, y):
    """x * y, lane by lane."""
    if not isinstance(x, vec.Vec) or x != y:
        raise TypeError("vmul takes two vectors of one type")

    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])

    return x(x, y), codegen


@njit(inline="always", error_model="numpy", nogil=True)
def _row_strips(A, Wq, S, C, i, s):
    """C[i, strips s..s+2] = (A[i] @ Wq[:, strips s..s+2]) * S[those columns]: one row, three
    strips at once. Six accumulators, not gemm._row_strips' eight: with the widened vectors
    beside them, eight spilled to the stack (measured: three strips ran 10-20% faster)."""
    Kd, N = A.shape[1], C.shape[1]
    V = lanes(C)
    NR = 2 * V
    span = Kd * NR
    c0 = c1 = c2 = c3 = c4 = c5 = vzero(C)
    w = s * span
    a = i * Kd
    for k in range(Kd):
        x = vsplat(A, a + k)
        w0, w1 = wpair(Wq, w, C)
        c0 = vfma(x, w0, c0)
        c1 = vfma(x, w1, c1)
        w0, w1 = wpair(Wq, w + span, C)
        c2 = vfma(x, w0, c2)
        c3 = vfma(x, w1, c3)
        w0, w1 = wpair(Wq, w + 2 * span, C)
        c4 = vfma(x, w0, c4)
        c5 = vfma(x, w1, c5)
        w += NR
    o, j = i * N + s * NR, s * NR
    vstore(C, o, vmul(c0, vload(S, j)))
    vstore(C, o + V, vmul(c1, vload(S, j + V)))
    vstore(C, o + NR, vmul(c2, vload(S, j + NR)))
    vstore(C, o + NR + V, vmul(c3, vload(S, j + NR + V)))
    vstore(C, o + 2 * NR, vmul(c4, vload(S, j + 2 * NR)))
    vstore(C, o + 2 * NR + V, vmul(c5, vload(S, j + 2 * NR + V)))


@njit(inline="always", error_model="numpy", nogil=True)
def _tile(A, Wq, S, C, i0, s, rows):
    """C[i0:i0+rows, strip s] = (A[i0:i0+rows] @ Wq[:, strip s]) * S[strip s]; rows <= 4, a
    constant after inlining. Each widened strip row serves every row of the tile."""
    Kd, N = A.shape[1], C.shape[1]
    V = lanes(C)
    NR = 2 * V
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = vzero(C)
    a = i0 * Kd
    w = s * Kd * NR
    for k in range(Kd):
        w0, w1 = wpair(Wq, w, C)
        w += NR
        x = vsplat(A, a + k)
        c00 = vfma(x, w0, c00)
        c01 = vfma(x, w1, c01)
        if rows > 1:
            x = vsplat(A, a + Kd + k)
            c10 = vfma(x, w0, c10)
            c11 = vfma(x, w1, c11)
        if rows > 2:
            x = vsplat(A, a + 2 * Kd + k)
            c20 = vfma(x, w0, c20)
            c21 = vfma(x, w1, c21)
        if rows > 3:
            x = vsplat(A, a + 3 * Kd + k)
            c30 = vfma(x, w0, c30)
            c31 = vfma(x, w1, c31)
    o, j = i0 * N + s * NR, s * NR
    s0, s1 = vload(S, j), vload(S, j + V)
    vstore(C, o, vmul(c00, s0))
    vstore(C, o + V, vmul(c01, s1))
    if rows > 1:
        vstore(C, o + N, vmul(c10, s0))
        vstore(C, o + N + V, vmul(c11, s1))
    if rows > 2:
        vstore(C, o + 2 * N, vmul(c20, s0))
        vstore(C, o + 2 * N + V, vmul(c21, s1))
    if rows > 3:
        vstore(C, o + 3 * N, vmul(c30, s0))
        vstore(C, o + 3 * N + V, vmul(c31, s1))


@kernel
def matmul(A, Wq, S, C):
    """C (m, N) = (A (m, Kd) @ W) * S, with Wq = W packed in a narrow format (precision.pack)
    and S (N,) its per-column scales; A, C float32 and C-contiguous, N whole strips."""
    m = A.shape[0]
    NS = C.shape[1] // strip_width(C)
    if m < MR:  # a few rows (batch-1 sampling): three strips at a time, row by row
        for i in range(m):
            s = 0
            while s + 3 <= NS:
                _row_strips(A, Wq, S, C, i, s)
                s += 3
            for t in range(s, NS):
                _tile(A, Wq, S, C, i, t, 1)
        return
    full = m - m % MR
    for s in range(NS):
        for i0 in range(0, full, MR):
            _tile(A, Wq, S, C, i0, s, 4)
        r = m - full
        if r == 1:
            _tile(A, Wq, S, C, full, s, 1)
        elif r == 2:
            _tile(A, Wq, S, C, full, s, 2)
        elif r == 3:
            _tile(A, Wq, S, C, full, s, 3)
