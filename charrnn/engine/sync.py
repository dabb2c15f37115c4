"""Two threads meeting inside jitted code: acquire loads and release stores of int64 flags,
and the spin-wait hint, as Numba intrinsics.

The batch-1 sampler split across cores (sample_kernels.generate_split) runs each layer's
step as one chunk of units per thread; the threads meet twice a character at a 2-layer
model. A Numba parallel region (prange) costs about 6 microseconds to enter and leave here,
a sixth of a 2 x 512 step's time; threads that stay inside one call and wait on a flag meet
in well under one. A flag is one int64 in an array, a cache line apart from the others so
the threads do not take turns owning one line.

A release store makes every write before it visible to the thread whose acquire load sees
the stored value; a plain Numba load in a wait loop could be hoisted out of the loop. A
compare-and-swap lets two threads race for one piece of work and exactly one win it.
"""

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LINE = 8  # int64 flags a cache line apart (64 bytes)
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _int64_array(a):
    if not (isinstance(a, types.Array) and a.dtype == types.int64 and a.layout == "C"):
        raise TypeError(f"expected a C-contiguous int64 array, got {a}")


def _address(context, builder, aty, a, i):
    return builder.gep(context.make_array(aty)(context, builder, a).data, [i])


@intrinsic
def load_acquire(typingctx, a, i):
    """a[i] (int64), read with acquire ordering (no bounds check)."""
    _int64_array(a)

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_address(context, builder, sig.args[0], *args), "acquire", 8)

    return types.int64(a, i), codegen


@intrinsic
def store_release(typingctx, a, i, v):
    """a[i] = v (int64), written with release ordering (no bounds check)."""
    _int64_array(a)

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(v, _address(context, builder, sig.args[0], args[0], args[1]), "release", 8)

    return types.none(a, i, v), codegen


@intrinsic
def swap_if(typingctx, a, i, old, new):
    """a[i] = new if a[i] == old, atomically (sequentially consistent); whether it was."""
    _int64_array(a)

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1])
        old = context.cast(builder, args[2], sig.args[2], types.int64)
        new = context.cast(builder, args[3], sig.args[3], types.int64)
        pair = builder.cmpxchg(ptr, old, new, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)

    return types.boolean(a, i, old, new), codegen


@intrinsic
def pause(typingctx):
    """The processor's spin-wait hint (x86 `pause`; nothing elsewhere)."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
            )
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen
