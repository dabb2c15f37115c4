"""Explicit vectors for Numba kernels: LLVM vector values of the widest registers the host
offers (64 bytes with AVX-512, else 32), so the same code compiles to zmm, ymm or xmm
instructions; nothing here is specific to one vendor. The width is read when a function is
compiled, never at import, so loading compiled kernels from Numba's cache costs nothing extra.

`Vec` is the Numba type; vload, vstore, vsplat, vzero and vfma are the operations the packed
products (gemm.py, qgemm.py) are written in, on flat element indices of C-contiguous arrays.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

_vector_bytes = None


def vector_bytes():
    """Bytes in the widest vector register of the CPU Numba compiles for (64 with AVX-512,
    else 32): the host's, unless NUMBA_CPU_NAME/NUMBA_CPU_FEATURES name another."""
    global _vector_bytes
    if _vector_bytes is None:
        from numba import config

        if config.CPU_NAME and config.CPU_NAME != "host":
            wide = "+avx512f" in (config.CPU_FEATURES or "")
        else:
            import llvmlite.binding as ll

            wide = bool(ll.get_host_cpu_features().get("avx512f"))
        _vector_bytes = 64 if wide else 32
    return _vector_bytes


class Vec(types.Type):
    """A vector of `lanes` values of a float type, held in one register (or a few)."""

    def __init__(self, dtype, lanes):
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Vec({dtype} x {lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elem, fe_type.lanes))


def _vec_of(arr):
    return Vec(arr.dtype, vector_bytes() * 8 // arr.dtype.bitwidth)


def _address(context, builder, aty, a, i):
    """Address of the i-th element of a C-contiguous array's data."""
    return builder.gep(context.make_array(aty)(context, builder, a).data, [i])


def _contiguous(a):
    if not (isinstance(a, types.Array) and a.layout == "C" and isinstance(a.dtype, types.Float)):
        raise TypeError(f"expected a C-contiguous float array, got {a}")


@intrinsic
def vload(typingctx, a, i):
    """The vector of elements i, i+1, ... of a's data (no bounds check)."""
    _contiguous(a)
    vt = _vec_of(a)

    def codegen(context, builder, sig, args):
        p = _address(context, builder, sig.args[0], args[0], args[1])
        ptr = builder.bitcast(p, context.get_value_type(vt).as_pointer())
        return builder.load(ptr, align=a.dtype.bitwidth // 8)

    return vt(a, i), codegen


@intrinsic
def vstore(typingctx, a, i, v):
    """Store v at elements i, i+1, ... of a's data (no bounds check)."""
    _contiguous(a)

    def codegen(context, builder, sig, args):
        p = _address(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(p, args[2].type.as_pointer()), align=a.dtype.bitwidth // 8)

    return types.none(a, i, v), codegen


@intrinsic
def vsplat(typingctx, a, i):
    """Element i of a's data in every lane."""
    _contiguous(a)
    vt = _vec_of(a)

    def codegen(context, builder, sig, args):
        x = builder.load(_address(context, builder, sig.args[0], args[0], args[1]))
        ty = context.get_value_type(vt)
        v = builder.insert_element(ir.Constant(ty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(v, ir.Constant(ty, ir.Undefined), zeros)

    return vt(a, i), codegen


@intrinsic
def vzero(typingctx, a):
    """A zero vector of a's element type."""
    _contiguous(a)
    vt = _vec_of(a)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)

    return vt(a), codegen


@intrinsic
def vfma(typingctx, x, y, z):
    """x * y + z, fused into one instruction where the machine has FMA."""
    if not isinstance(x, Vec) or x != y or x != z:
        raise TypeError("vfma takes three vectors of one type")

    def codegen(context, builder, sig, args):
        t = args[0].type
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(t, [t, t, t]), f"llvm.fmuladd.v{x.lanes}f{x.dtype.bitwidth}"
        )
        return builder.call(fn, args)

    return x(x, y, z), codegen


@intrinsic
def lanes(typingctx, a):
    """Elements of a's type in one vector: a compile-time constant."""
    _contiguous(a)
    n = _vec_of(a).lanes

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, n)

    return types.intp(a), codegen
