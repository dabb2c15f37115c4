"""bf16 products on AMX tiles (Intel Sapphire Rapids and later): C (float32) = or += A @ B, with
A and B in bgemm.py's layouts, by TDPBF16PS.

AMX holds eight tile registers of up to 16 rows of 64 bytes. TDPBF16PS adds to a float32 tile
C (16 x 16) the product of a bf16 tile A (16 rows x 32 k) and a bf16 tile B (16 pairs of k x
16 columns, each 64-byte row holding the pairs (B[2p, c], B[2p+1, c]) of 16 columns): 8192
multiply-adds in one instruction, where vdpbf16ps makes 32. bgemm.py's layouts are already
these: a row of A (bgemm.convert_rows) is read 32 values at a time, and a packed strip's pair p
(bgemm.pack) is two 64-byte B rows, one per half of the strip's 32 columns, so a B tile is 16
pairs at a stride of 128 bytes. The k dimension must be padded to whole tiles of 32 (KT): the
layouts' Kp, with zeros.

The blocking: C in blocks of 32 rows x one strip (32 columns), four tiles (tmm0-3); per 32 k,
two A tiles (tmm4-5, the block's two 16-row halves), two B tiles (tmm6-7, the strip's two
halves) and four TDPBF16PS. A block of fewer rows (a window's last, or a recurrent step's few)
is configured with those rows.

Linux gives a process the tiles' state only once asked (arch_prctl ARCH_REQ_XCOMP_PERM):
`available()` asks, and says whether both the CPU and the kernel allow it.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import bf16ops, bgemm

kernel = njit(cache=True, error_model="numpy", nogil=True)
KT = 32  # k values in one A tile row (64 bytes of bf16)
ROWS = 16  # rows of a tile
NR = bgemm.NR  # columns of a strip: two tiles of 16
FEATURES = ("amx-tile", "amx-bf16")

_available = None


def _request_tiles():
    """Ask Linux for the AMX tile data state (XFEATURE_XTILEDATA) for this process."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 158, 0x1023, 18
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0


def compiles():
    """Whether the CPU Numba compiles for has AMX-BF16 (elsewhere each tile instruction
    compiles to a trap, as bgemm's vdpbf16ps does)."""
    return bf16ops.has_features(*FEATURES)


def available():
    """Whether this process may use AMX-BF16: the CPU Numba compiles for has it, and Linux gave
    the process the tiles' state (asked once here)."""
    global _available
    if _available is None:
        _available = bool(compiles() and _request_tiles())
    return _available


# ---------------------------------------------------------------------------------------------
# The tile instructions, as LLVM intrinsics (tile numbers are immediates: one function each)

_I8, _I64 = ir.IntType(8), ir.IntType(64)


def _call(builder, name, argtys, args):
    if not compiles():
        bf16ops.trap(builder)
        return
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), argtys), name)
    builder.call(fn, args)


def _ptr(context, builder, aty, a, i):
    return builder.bitcast(bf16ops.vec._address(context, builder, aty, a, i), _I8.as_pointer())


@intrinsic
def load_config(typingctx, cfg):
    """LDTILECFG from cfg (64 uint8: palette, start row, bytes per row and rows of each tile)."""

    def codegen(context, builder, sig, args):
        p = _ptr(context, builder, sig.args[0], args[0], ir.Constant(_I64, 0))
        _call(builder, "llvm.x86.ldtilecfg", [_I8.as_pointer()], [p])

    return types.none(cfg), codegen


@intrinsic
def release(typingctx):
    """TILERELEASE: the tiles back to their initial state."""

    def codegen(context, builder, sig, args):
        _call(builder, "llvm.x86.tilerelease", [], [])

    return types.none(), codegen


def _tile_load(t):
    @intrinsic
    def load(typingctx, a, i, stride):
        """Tile t from a's element i, rows stride bytes apart."""

        def codegen(context, builder, sig, args):
            p = _ptr(context, builder, sig.args[0], args[0], args[1])
            s = context.cast(builder, args[2], sig.args[2], types.int64)
            _call(builder, "llvm.x86.tileloadd64", [_I8, _I8.as_pointer(), _I64], [ir.Constant(_I8, t), p, s])

        return types.none(a, i, stride), codegen

    return load


def _tile_store(t):
    @intrinsic
    def store(typingctx, a, i, stride):
        """Tile t to a's element i, rows stride bytes apart."""

        def codegen(context, builder, sig, args):
            p = _ptr(context, builder, sig.args[0], args[0], args[1])
            s = context.cast(builder, args[2], sig.args[2], types.int64)
            _call(
                builder, "llvm.x86.tilestored64", [_I8, _I8.as_pointer(), _I64], [ir.Constant(_I8, t), p, s]
            )

        return types.none(a, i, stride), codegen

    return store


def _tile_zero(t):
    @intrinsic
    def zero(typingctx):
        def codegen(context, builder, sig, args):
            _call(builder, "llvm.x86.tilezero", [_I8], [ir.Constant(_I8, t)])

        return types.none(), codegen

    return zero


def _tile_dot(c, a, b):
    @intrinsic
    def dot(typingctx):
        """TDPBF16PS: tile c += tile a (bf16) @ tile b (bf16 pairs)."""

        def codegen(context, builder, sig, args):
            _call(builder, "llvm.x86.tdpbf16ps", [_I8] * 3, [ir.Constant(_I8, x) for x in (c, a, b)])

        return types.none(), codegen

    return dot


load0, load1, load2, load3 = (_tile_load(t) for t in range(4))
load_a0, load_a1, load_b0, load_b1 = (_tile_load(t) for t in range(4, 8))
store0, store1, store2, store3 = (_tile_store(t) for t in range(4))
zero0, zero1, zero2, zero3 = (_tile_zero(t) for t in range(4))
dot00, dot01, dot10, dot11 = _tile_dot(0, 4, 6), _tile_dot(1, 4, 7), _tile_dot(2, 5, 6), _tile_dot(3, 5, 7)


# ---------------------------------------------------------------------------------------------
# The product


@kernel
def configure(cfg, r0, r1):
    """Tile configuration for a block of r0 + r1 rows (r0 <= 16 in the first half, r1 <= 16 in
    the second; r1 = 0 leaves tiles 2, 3 and 5 unconfigured), loaded."""
    cfg[:] = 0
    cfg[0] = 1  # palette 1
    for t, r in ((0, r0), (1, r0), (2, r1), (3, r1), (4, r0), (5, r1), (6, ROWS), (7, ROWS)):
        if r > 0:
            cfg[16 + 2 * t] = 64  # bytes per row (little-endian uint16)
            cfg[48 + t] = r
    load_config(cfg)


@njit(inline="always", error_model="numpy", nogil=True)
def _block(A, Bp, C, i0, s, acc, two):
    """C[i0 : i0 + 16 or 32, strip s] = (or += with acc) A[those rows] @ B[:, strip s], the tiles
    configured for the block's rows; two: the block has a second half of rows."""
    N = C.shape[1]
    Kp = Bp.size // N
    P = Kp // 2
    cs, ks = 4 * N, 2 * Kp  # row strides in bytes: C float32, A bf16
    c = i0 * N + s * NR
    c2 = c + ROWS * N
    if acc:
        load0(C, c, cs)
        load1(C, c + ROWS, cs)
        if two:
            load2(C, c2, cs)
            load3(C, c2 + ROWS, cs)
    else:
        zero0()
        zero1()
        if two:
            zero2()
            zero3()
    a = i0 * Kp
    w = s * P * 2 * NR
    for _ in range(Kp // KT):
        load_a0(A, a, ks)
        load_b0(Bp, w, 4 * NR)
        load_b1(Bp, w + NR, 4 * NR)
        dot00()
        dot01()
        if two:
            load_a1(A, a + ROWS * Kp, ks)
            dot10()
            dot11()
        a += KT
        w += KT * NR
    store0(C, c, cs)
    store1(C, c + ROWS, cs)
    if two:
        store2(C, c2, cs)
        store3(C, c2 + ROWS, cs)


@kernel
def matmul(A, Bp, C, acc, cfg):
    """C (m, N) = (or += with acc) A @ B: A (m * Kp,) bf16 rows (bgemm.convert_rows), Bp =
    bgemm.pack(B) with Kp = Bp.size // N a multiple of KT, C float32 C-contiguous with N whole
    strips; cfg a 64-byte uint8 scratch for the tile configuration. Only where available()."""
    m, N = C.shape
    S = N // NR
    full = m // (2 * ROWS) * (2 * ROWS)
    if full > 0:
        configure(cfg, ROWS, ROWS)
        for s in range(S):
            for i0 in range(0, full, 2 * ROWS):
                _block(A, Bp, C, i0, s, acc, True)
    r = m - full
    if r > 0:
        r0 = min(ROWS, r)
        configure(cfg, r0, r - r0)
        for s in range(S):
            if r > r0:
                _block(A, Bp, C, full, s, acc, True)
            else:
                _block(A, Bp, C, full, s, acc, False)
    release()


@kernel
def padded(n):
    """n rounded up to whole tiles of k: Kp for a k dimension of n."""
    return (n + KT - 1) // KT * KT


@kernel
def matmul_tn_acc(X, G, C, Xp, Gp, cfg):
    """C (H, N) += X (M, H)^T @ G (M, N) on the tiles: bgemm.matmul_tn_acc's blocks of KC rows,
    padded to whole tiles of k; Xp and Gp at least H * padded(min(KC, M)) and
    padded(min(KC, M)) * N elements."""
    M, Hx = X.shape
    N = C.shape[1]
    for k0 in range(0, M, bgemm.KC):
        kc = min(bgemm.KC, M - k0)
        kp = padded(kc)
        A, Bp = Xp[: Hx * kp], Gp[: kp * N]
        bgemm.convert_rows(X[k0 : k0 + kc].T, A)
        bgemm.pack(G[k0 : k0 + kc], Bp)
        matmul(A, Bp, C, True, cfg)


def config_buffer():
    """A scratch for matmul's tile configuration."""
    return np.zeros(64, np.uint8)
