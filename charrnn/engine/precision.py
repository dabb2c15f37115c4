"""Weights in fewer bytes for sampling: the formats, their rounding, and their packing; and
which products a training takes (train_precision: --precision auto, fp32 or bf16).

    fp32  the model's own float32 weights: exact (the default)
    bf16  each weight rounded to its top 16 bits (nearest, ties to even): 8 significant bits,
          a relative error of at most 2^-8 (half of truncation's), the float32 range
    int8  each column j of a matrix as round(W[:, j] / s_j), s_j = max |W[:, j]| / 127: an
          absolute error of at most s_j / 2 per weight

Only the matrices that sampling streams through products are reduced (QUANTISED: the input
weights of layers above the first, the recurrent weights, the decoder). The first layer's
input weights are a row lookup, one row a character, and the biases are added once: both
stay float32, as do the state and every sum (qgemm.py accumulates in float32).

`dequantised` gives, in float32, the weights a reduced product reads, so that a model holding
them (`reduced_params`) scores a text as the reduced sampler sees it: what a format costs in
loss is measured with the ordinary evaluation on those weights.
"""

import numpy as np

from . import amx, bgemm, gemm
from ..config import PRECISIONS, check_precision as check  # noqa: F401  (the formats' names)
from ..errors import UsageError

QUANTISED = ("Wx", "Wh", "Wy")  # Params fields read through packed products while sampling
STORAGE = {"bf16": np.uint16, "int8": np.int8}
INT8_MAX = 127


def bf16_bits(W):
    """The bf16 (uint16) nearest each float32 of W, ties to even. W must be finite."""
    shape = np.shape(W)
    bits = np.ascontiguousarray(W, np.float32).view(np.uint32).astype(np.uint64).reshape(shape)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_widen(b):
    """float32 of bf16 bits b: the bits shifted to the top half."""
    return (np.asarray(b, np.uint16).astype(np.uint32) << 16).view(np.float32)


def int8_quantise(W):
    """(q int8 like W (..., Kd, N), s (..., N) float32) with W ~ q * s, per column of each
    matrix; an all-zero column gets scale 1."""
    W = np.asarray(W, np.float32)
    top = np.abs(W).max(axis=-2) if W.shape[-2] else np.zeros(W.shape[:-2] + W.shape[-1:])
    s = np.where(top > 0, top / np.float32(INT8_MAX), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(W / s[..., None, :]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, s


def dequantised(W, precision):
    """The float32 weights a `precision` product reads in place of W (..., Kd, N)."""
    check(precision)
    W = np.asarray(W, np.float32)
    if precision == "fp32":
        return W.copy()
    if precision == "bf16":
        return bf16_widen(bf16_bits(W)).reshape(W.shape)
    q, s = int8_quantise(W)
    return q.astype(np.float32) * s[..., None, :]


def reduced_params(params, precision):
    """{field: array} of Params with QUANTISED matrices replaced by their dequantised
    weights."""
    return {
        name: dequantised(arr, precision) if name in QUANTISED else arr
        for name, arr in zip(params._fields, params)
    }


def strip_width():
    """NR, columns per packed strip of a float32 product (two vectors)."""
    return gemm.strip_width(np.zeros(1, np.float32))


def pack(W, precision):
    """(Wq, S): W (Kd, N) in the `precision` format (bf16 or int8), packed for qgemm.matmul
    in strips padded with zero columns, and its per-column scales S (Np,) float32 (ones for
    bf16). Within a bf16 strip row, element 2j is column j and 2j + 1 column j + NR/2."""
    W = np.asarray(W, np.float32)
    Kd, N = W.shape
    NR = strip_width()
    Np = -(-N // NR) * NR
    S = np.ones(Np, np.float32)
    if precision == "bf16":
        q = np.zeros((Kd, Np), np.uint16)
        q[:, :N] = bf16_bits(W)
        strips = q.reshape(Kd, Np // NR, 2, NR // 2).transpose(1, 0, 3, 2)
    elif precision == "int8":
        q = np.zeros((Kd, Np), np.int8)
        q[:, :N], S[:N] = int8_quantise(W)
        strips = q.reshape(Kd, Np // NR, NR).transpose(1, 0, 2)
    else:
        raise ValueError(f"no packed format for precision {precision!r}")
    return np.ascontiguousarray(strips).reshape(-1), S


# ---------------------------------------------------------------------------------------------
# Training's products: fp32, or bf16 inputs with float32 sums (bgemm.py, amx.py)

AUTO_BF16_FROM = 128  # the least hidden size --precision auto trains in bf16 (on AMX: 1.5x fp32's
# rate at 2 x 128, 1.9x at 256, 2.6x at 512; docs/benchmarks.md)


def train_precision(config, dtype, precision):
    """The products a training of `config` in `dtype` takes for `precision`: auto is bf16 where
    this CPU multiplies bf16 on AMX tiles (where bf16 trains faster than fp32: with vdpbf16ps
    alone it trained no faster, measured on an Intel Xeon), in float32, at a hidden size of
    whole strips from AUTO_BF16_FROM up; fp32 elsewhere. fp32 and bf16 are kept as asked."""
    if precision != "auto":
        return precision
    wide = np.dtype(dtype) == np.float32 and config.hidden >= AUTO_BF16_FROM and config.hidden % bgemm.NR == 0
    return "bf16" if wide and bgemm.available() and amx.available() else "fp32"


def check_train_precision(config, dtype, precision):
    """UsageError unless a model of `config` in `dtype` can train with `precision` products on
    this machine: fp32 always; bf16 (inputs rounded to bf16, float32 sums: bgemm.py, amx.py)
    in float32, on a CPU with AVX512-BF16, at a hidden size of whole strips."""
    if precision in ("fp32", "auto"):
        return
    if precision != "bf16":
        raise UsageError(f"--precision of train must be auto, fp32 or bf16, not {precision!r}")
    if np.dtype(dtype) != np.float32:
        raise UsageError("--precision bf16 trains in float32: drop --float64")
    if not bgemm.available():
        raise UsageError(
            "--precision bf16 needs a CPU with AVX512-BF16 (vdpbf16ps), which this one lacks; "
            "train with --precision fp32"
        )
    if config.hidden % bgemm.NR:
        raise UsageError(f"--precision bf16 needs a hidden size that is a multiple of {bgemm.NR}")


def bf16_engine():
    """What bf16 products run on here: 'amx' (tiles) or 'avx512-bf16' (vdpbf16ps)."""
    return "amx" if amx.available() else "avx512-bf16"
