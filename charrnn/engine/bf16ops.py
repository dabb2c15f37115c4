"""The bf16 instructions as Numba intrinsics, for the products of bgemm.py and amx.py: vdpbf16ps
(AVX512-BF16) on vectors of bf16 pairs, the loads that make those vectors, 16-lane float32
sums whatever width vec.py would choose, the bits of a float32, and whether the CPU Numba
compiles for has an instruction (where it has not, an instruction compiles to a trap, so that
kernels holding a bf16 path beside the float32 one still compile everywhere)."""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import vec

LANES = 16  # float32 sums in one vdpbf16ps
FEATURE = "avx512bf16"  # LLVM's name of the CPU feature


def has_features(*names):
    """Whether the CPU Numba compiles for has all these LLVM features: the host's, unless
    NUMBA_CPU_NAME/NUMBA_CPU_FEATURES name another."""
    from numba import config

    if config.CPU_NAME and config.CPU_NAME != "host":
        return all(f"+{f}" in (config.CPU_FEATURES or "") for f in names)
    import llvmlite.binding as ll

    host = ll.get_host_cpu_features()
    return all(host.get(f) for f in names)


def trap(builder):
    """Code that stops the process if run: what an instruction the CPU lacks compiles to."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.trap")
    builder.call(fn, [])


# ---------------------------------------------------------------------------------------------
# The instruction and its operands, as LLVM intrinsics


class _BFloat(ir.Type):
    """LLVM's bfloat, which llvmlite's IR builder does not name: only the element type of the
    vectors the intrinsic takes (the values travel as 32-bit integers and are bitcast)."""

    def _to_string(self):
        return "bfloat"

    def __eq__(self, other):
        return isinstance(other, _BFloat)

    def __hash__(self):
        return hash("bfloat")


PAIRS = vec.Vec(types.uint32, LANES)  # 16 lanes of two bf16 values each
SUMS = vec.Vec(types.float32, LANES)
_I32 = ir.IntType(32)
_IV = ir.VectorType(_I32, LANES)


def _bf16_array(a):
    if not (isinstance(a, types.Array) and a.layout == "C" and a.dtype == types.uint16):
        raise TypeError(f"expected a C-contiguous uint16 (bf16) array, got {a}")


@intrinsic
def pload(typingctx, a, i):
    """The 32 bf16 values at elements i, i+1, ... of a (uint16) as 16 lanes of pairs."""
    _bf16_array(a)

    def codegen(context, builder, sig, args):
        p = vec._address(context, builder, sig.args[0], args[0], args[1])
        return builder.load(builder.bitcast(p, _IV.as_pointer()), align=2)

    return PAIRS(a, i), codegen


@intrinsic
def psplat(typingctx, a, i):
    """The pair of bf16 values at elements i, i+1 of a (uint16) in every lane."""
    _bf16_array(a)

    def codegen(context, builder, sig, args):
        p = vec._address(context, builder, sig.args[0], args[0], args[1])
        x = builder.load(builder.bitcast(p, _I32.as_pointer()), align=2)
        v = builder.insert_element(ir.Constant(_IV, ir.Undefined), x, ir.Constant(_I32, 0))
        return builder.shuffle_vector(v, ir.Constant(_IV, ir.Undefined), ir.Constant(_IV, [0] * LANES))

    return PAIRS(a, i), codegen


@intrinsic
def vdot(typingctx, c, a, b):
    """c + a[2j] * b[2j] + a[2j+1] * b[2j+1] in each lane j: one vdpbf16ps."""
    if c != SUMS or a != PAIRS or b != PAIRS:
        raise TypeError("vdot takes 16 float32 sums and two vectors of bf16 pairs")

    def codegen(context, builder, sig, args):
        if not has_features(FEATURE):
            trap(builder)
            return args[0]
        bv = ir.VectorType(_BFloat(), 2 * LANES)
        ft = args[0].type
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ft, [ft, bv, bv]), "llvm.x86.avx512bf16.dpbf16ps.512"
        )
        return builder.call(fn, [args[0], builder.bitcast(args[1], bv), builder.bitcast(args[2], bv)])

    return SUMS(c, a, b), codegen


def _float32_array(a):
    if not (isinstance(a, types.Array) and a.layout == "C" and a.dtype == types.float32):
        raise TypeError(f"expected a C-contiguous float32 array, got {a}")


@intrinsic
def sload(typingctx, a, i):
    """The 16 float32 at elements i, i+1, ... of a."""
    _float32_array(a)

    def codegen(context, builder, sig, args):
        p = vec._address(context, builder, sig.args[0], args[0], args[1])
        return builder.load(builder.bitcast(p, context.get_value_type(SUMS).as_pointer()), align=4)

    return SUMS(a, i), codegen


@intrinsic
def sstore(typingctx, a, i, v):
    """Store 16 float32 sums v at elements i, i+1, ... of a."""
    _float32_array(a)

    def codegen(context, builder, sig, args):
        p = vec._address(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(p, args[2].type.as_pointer()), align=4)

    return types.none(a, i, v), codegen


@intrinsic
def szero(typingctx):
    """16 float32 zeros."""

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(SUMS), None)

    return SUMS(), codegen


@intrinsic
def f32_bits(typingctx, x):
    """The bits of a float32 as a uint32."""
    if x != types.float32:
        raise TypeError(f"f32_bits takes a float32, got {x}")

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], _I32)

    return types.uint32(x), codegen


@njit(inline="always", error_model="numpy", nogil=True)
def bf16(x):
    """The bf16 (uint16 bits) nearest the float32 x, ties to even (x finite; a float64 is
    rounded to float32 first)."""
    b = f32_bits(np.float32(x))
    return np.uint16((b + 0x7FFF + ((b >> 16) & 1)) >> 16)
